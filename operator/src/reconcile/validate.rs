//! Step 2: the spec and what step 1 read, checked into a typed [`Validated`] cluster, or the
//! problem the status reports (the running pods are then left alone: they serve the last good
//! spec).

use sqe_crds::SqeCluster;

use crate::error::{Error, Result};
use crate::resources::{self, SecretDigests, Validated};
use crate::status::Problem;

/// `Ok(Err(problem))` for a spec the user must fix; `Err` only for the operator's own failures.
pub(crate) fn validate<'a>(
    cluster: &'a SqeCluster,
    digests: &SecretDigests,
) -> Result<std::result::Result<Validated<'a>, Problem>> {
    match resources::validate(cluster, digests) {
        Ok(valid) => Ok(Ok(valid)),
        Err(Error::InvalidSpec(msg)) => Ok(Err(Problem::new("InvalidSpec", msg))),
        Err(e) => Err(e),
    }
}

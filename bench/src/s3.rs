//! A read-only `ObjectStore` over opendal's S3 service with static keys: what DataFusion needs
//! to list a table's data directory and read byte ranges of its Parquet files.
//!
//! opendal is the engine's own storage client (iceberg's FileIO reads through it), already built
//! with its S3 service in this workspace; object_store's `aws` feature would rebuild every
//! DataFusion crate. A ranged read is one GET with a Range header, and `get_ranges` is the trait's
//! default (nearby ranges coalesced, up to 10 at a time), as with object_store's S3.

use std::fmt;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, Error, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, Result,
};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

const STORE: &str = "opendal-s3";

/// Where and how to reach the bucket.
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug)]
pub struct OpendalS3 {
    op: opendal::Operator,
    bucket: String,
}

impl OpendalS3 {
    pub fn new(s: &S3Settings) -> anyhow::Result<Self> {
        let builder = opendal::services::S3::default()
            .bucket(&s.bucket)
            .endpoint(&s.endpoint)
            .region(&s.region)
            .access_key_id(&s.access_key_id)
            .secret_access_key(&s.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        Ok(Self {
            op: opendal::Operator::new(builder)?.finish(),
            bucket: s.bucket.clone(),
        })
    }

    async fn read(&self, location: &Path, range: Range<u64>) -> Result<Bytes> {
        let buf = self
            .op
            .read_with(location.as_ref())
            .range(range)
            .await
            .map_err(|e| error(location, e))?;
        Ok(buf.to_bytes())
    }

    async fn stat(&self, location: &Path) -> Result<ObjectMeta> {
        let meta = self
            .op
            .stat(location.as_ref())
            .await
            .map_err(|e| error(location, e))?;
        Ok(object_meta(location.clone(), &meta))
    }
}

impl fmt::Display for OpendalS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpendalS3(s3://{})", self.bucket)
    }
}

fn error(location: &Path, e: opendal::Error) -> Error {
    if e.kind() == opendal::ErrorKind::NotFound {
        Error::NotFound {
            path: location.to_string(),
            source: Box::new(e),
        }
    } else {
        Error::Generic {
            store: STORE,
            source: Box::new(e),
        }
    }
}

fn not_implemented(operation: &str) -> Error {
    Error::NotImplemented {
        operation: operation.to_owned(),
        implementer: STORE.to_owned(),
    }
}

fn object_meta(location: Path, meta: &opendal::Metadata) -> ObjectMeta {
    let last_modified = meta
        .last_modified()
        .and_then(|t| SystemTime::from(t).duration_since(UNIX_EPOCH).ok())
        .and_then(|d| {
            DateTime::<Utc>::from_timestamp(i64::try_from(d.as_secs()).ok()?, d.subsec_nanos())
        })
        .unwrap_or_default();
    ObjectMeta {
        location,
        last_modified,
        size: meta.content_length(),
        e_tag: meta.etag().map(str::to_owned),
        version: None,
    }
}

#[async_trait]
impl ObjectStore for OpendalS3 {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(not_implemented("put"))
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(not_implemented("put_multipart"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // A bounded range is read without a HEAD first (one GET, like object_store's S3); the
        // size it reports is then the range's end, which is all a ranged read looks at.
        let (meta, range) = match options.range {
            Some(GetRange::Bounded(r)) if !options.head => {
                let meta = ObjectMeta {
                    location: location.clone(),
                    last_modified: DateTime::<Utc>::default(),
                    size: r.end,
                    e_tag: None,
                    version: None,
                };
                (meta, r)
            }
            range => {
                let meta = self.stat(location).await?;
                let size = meta.size;
                let r = match range {
                    None => 0..size,
                    Some(GetRange::Bounded(r)) => r.start..r.end.min(size),
                    Some(GetRange::Offset(o)) => o.min(size)..size,
                    Some(GetRange::Suffix(n)) => size.saturating_sub(n)..size,
                };
                (meta, r)
            }
        };
        let payload = if options.head {
            GetResultPayload::Stream(stream::empty().boxed())
        } else {
            let bytes = self.read(location, range.clone()).await?;
            GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed())
        };
        Ok(GetResult {
            payload,
            meta,
            range,
            attributes: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations.map(|_| Err(not_implemented("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let op = self.op.clone();
        let dir = prefix.map(|p| format!("{p}/")).unwrap_or_default();
        let err_dir = Path::from(dir.as_str());
        stream::once(async move { op.lister_with(&dir).recursive(true).await })
            .map_err(move |e| error(&err_dir, e))
            .map_ok(|lister| lister.map_err(|e| error(&Path::default(), e)))
            .try_flatten()
            .try_filter(|entry| futures::future::ready(entry.metadata().is_file()))
            .map_ok(|entry| object_meta(Path::from(entry.path()), entry.metadata()))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let dir = prefix.map(|p| format!("{p}/")).unwrap_or_default();
        let entries = self
            .op
            .list_with(&dir)
            .await
            .map_err(|e| error(&Path::from(dir.as_str()), e))?;
        let mut out = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
        };
        for entry in entries {
            if entry.path() == dir {
                continue;
            }
            if entry.metadata().is_dir() {
                out.common_prefixes.push(Path::from(entry.path()));
            } else {
                out.objects
                    .push(object_meta(Path::from(entry.path()), entry.metadata()));
            }
        }
        Ok(out)
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> Result<()> {
        Err(not_implemented("copy"))
    }
}

-- Argo CD health check for sqe.io/SqeCluster (argocd-cm key
-- `resource.customizations.health.sqe.io_SqeCluster`; see argocd-cm.yaml next to this file).
--
-- Argo CD runs this with the live object in the global `obj` and expects a table with
-- `status` (Healthy, Progressing, Degraded, Suspended) and `message`. The operator writes
-- `status` only through the status subresource; each condition and `status.observedGeneration`
-- say which `metadata.generation` they describe, so a status older than the spec is never read
-- as the health of the spec.
local hs = {}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local spec = obj.spec or {}
local op = spec.clusterOperation or {}
local status = obj.status
local suspended = {
  status = "Suspended",
  message = "Reconciliation paused (spec.clusterOperation.reconciliationPaused)",
}

-- The user asked the operator to stand still: nothing will progress until they lift it.
if op.reconciliationPaused == true then
  return suspended
end

if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = (obj.metadata or {}).generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

-- Current status says paused (the spec no longer does only in a status older than the spec,
-- which the generation check above already reported as Progressing).
local paused = condition(status, "ReconciliationPaused")
if paused ~= nil and paused.status == "True" then
  return suspended
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or degraded.reason or "Degraded"
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = ready.message or ready.reason or "Not ready"
else
  hs.message = "Waiting for the Ready condition"
end
return hs

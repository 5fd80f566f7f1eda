-- Tests of ../health.lua, the Argo CD health check of SqeCluster.
--
--   lua5.4 deploy/argocd/test/run.lua             run the cases below; exit 1 on a failure
--   lua5.4 deploy/argocd/test/run.lua FILE.json   print "<status>\t<message>" for one object
--                                                (e.g. `kubectl get sqe NAME -o json`)
local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local json = require("json")

-- Run the health check as Argo CD does: a fresh chunk with the object in the global `obj`.
local function health(o)
  local env = setmetatable({ obj = o }, { __index = _G })
  local chunk = assert(loadfile(here .. "/../health.lua", "t", env))
  return chunk()
end

if arg[1] then
  local f = assert(io.open(arg[1]))
  local hs = health(json.decode(f:read("a")))
  f:close()
  print(hs.status .. "\t" .. hs.message)
  os.exit(0)
end

local function cond(type_, status, reason, message)
  return { type = type_, status = status, reason = reason, message = message or reason }
end

local function cluster(generation, status, spec)
  return {
    apiVersion = "sqe.io/v1alpha1",
    kind = "SqeCluster",
    metadata = { name = "lake", namespace = "team-a", generation = generation },
    spec = spec or { engine = { image = "sqe:1" } },
    status = status,
  }
end

local ready = {
  cond("Ready", "True", "AllReplicasReady", "2/2 engine pods ready"),
  cond("Progressing", "False", "RolloutComplete"),
  cond("Degraded", "False", "AsExpected"),
  cond("ReconciliationPaused", "False", "Reconciling"),
}

local cases = {
  {
    "a new cluster the operator has not seen yet is Progressing",
    cluster(1, nil), "Progressing", "report status",
  },
  {
    "a status without conditions is Progressing",
    cluster(1, { observedGeneration = 1, conditions = {} }), "Progressing", "report status",
  },
  {
    "Ready=True for the current generation is Healthy",
    cluster(3, { observedGeneration = 3, conditions = ready }), "Healthy", "2/2 engine pods ready",
  },
  {
    "Ready=True for an older generation is Progressing: the new spec is not realised yet",
    cluster(4, { observedGeneration = 3, conditions = ready }), "Progressing", "generation 4",
  },
  {
    "a status without observedGeneration is Progressing",
    cluster(1, { conditions = ready }), "Progressing", "generation 1",
  },
  {
    "a rollout in progress is Progressing with the Ready message",
    cluster(2, {
      observedGeneration = 2,
      conditions = {
        cond("Ready", "False", "ReplicasNotReady", "1/2 engine pods ready"),
        cond("Progressing", "True", "RollingOut"),
        cond("Degraded", "False", "AsExpected"),
      },
    }), "Progressing", "1/2 engine pods ready",
  },
  {
    "Degraded=True is Degraded with its message, even while old pods still serve",
    cluster(2, {
      observedGeneration = 2,
      conditions = {
        cond("Ready", "True", "AllReplicasReady"),
        cond("Degraded", "True", "SecretMissing", "Secret team-a/oidc referenced by spec.oidc.clientSecretRef not found"),
      },
    }), "Degraded", "Secret team-a/oidc",
  },
  {
    "a stale Degraded=True from an older generation is Progressing, not Degraded",
    cluster(3, {
      observedGeneration = 2,
      conditions = { cond("Degraded", "True", "SecretMissing", "gone") },
    }), "Progressing", "generation 3",
  },
  {
    "spec.clusterOperation.reconciliationPaused is Suspended, before the operator saw it",
    cluster(5, { observedGeneration = 4, conditions = ready },
      { engine = { image = "sqe:2" }, clusterOperation = { reconciliationPaused = true } }),
    "Suspended", "paused",
  },
  {
    "ReconciliationPaused=True is Suspended even when Degraded",
    cluster(5, {
      observedGeneration = 5,
      conditions = {
        cond("Degraded", "True", "SecretMissing"),
        cond("ReconciliationPaused", "True", "ReconciliationPaused"),
      },
    }), "Suspended", "paused",
  },
  {
    "lifting the pause is Progressing until the operator observes it",
    cluster(6, {
      observedGeneration = 5,
      conditions = { cond("ReconciliationPaused", "True", "ReconciliationPaused") },
    }, { engine = { image = "sqe:2" }, clusterOperation = { reconciliationPaused = false } }),
    "Progressing", "generation 6",
  },
  {
    "Ready=False with no other condition is Progressing",
    cluster(1, { observedGeneration = 1, conditions = { cond("Ready", "False", "Creating", "engine Deployment not created yet") } }),
    "Progressing", "not created yet",
  },
}

-- The same object as the API server prints it, through the JSON decoder (nulls, escapes,
-- nested arrays), so the one-object mode reads real `kubectl get -o json` output.
local from_json = json.decode([[
{"apiVersion":"sqe.io/v1alpha1","kind":"SqeCluster",
 "metadata":{"name":"lake","namespace":"team-a","generation":7,"labels":null,
             "managedFields":[{"manager":"gitops","fieldsV1":{"f:spec":{}}}]},
 "spec":{"clusterOperation":{"reconciliationPaused":false},"engine":{"image":"sqe:1","replicas":3}},
 "status":{"observedGeneration":7,"replicas":3,"readyReplicas":3,"selector":"a=b,c=d",
   "conditions":[
     {"type":"Ready","status":"True","reason":"AllReplicasReady","message":"3/3 engine pods ready \u2713 \"ok\"",
      "lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":7},
     {"type":"Degraded","status":"False","reason":"AsExpected","message":"spec realised"}]}}
]])
cases[#cases + 1] = { "an object decoded from API server JSON", from_json, "Healthy", "3/3 engine pods ready ✓ \"ok\"" }

local failed = 0
for _, c in ipairs(cases) do
  local name, o, want, msg = c[1], c[2], c[3], c[4]
  local ok, hs = pcall(health, o)
  if not ok then
    failed = failed + 1
    print("FAIL " .. name .. ": " .. tostring(hs))
  elseif hs.status ~= want or not hs.message:find(msg, 1, true) then
    failed = failed + 1
    print(string.format("FAIL %s: got %s %q, want %s with %q", name, hs.status, hs.message, want, msg))
  else
    print("ok   " .. name)
  end
end
print(string.format("%d passed, %d failed", #cases - failed, failed))
os.exit(failed == 0 and 0 or 1)

-- Table test for the Argo CD health check in deploy/gitops/argocd-health.yaml.
-- Argo CD runs health scripts in gopher-lua (Lua 5.1) with the live object in the global `obj`.
--   lua5.1 hack/argocd-health-test.lua < script.lua
-- Prints one line per case and exits non-zero when any case fails.
local source = io.read("*a")
local chunk = assert((loadstring or load)(source, "health"))

local function health(o)
  obj = o
  return chunk()
end

local function cond(status, reason, message)
  return {type = "Ready", status = status, reason = reason, message = message or reason,
          observedGeneration = 2, lastTransitionTime = "2026-01-01T00:00:00Z"}
end

local function resource(generation, observed, conditions)
  local o = {apiVersion = "vpn.altostrat.io/v1alpha1", kind = "VpnInstance",
             metadata = {name = "demo-hub", namespace = "default", generation = generation}}
  if observed ~= nil or conditions ~= nil then
    o.status = {observedGeneration = observed, conditions = conditions}
  end
  return o
end

local synced = {type = "Synced", status = "True", reason = "ReconcileSuccess", message = ""}
local paused = {type = "Paused", status = "True", reason = "ReconcilePaused", message = "paused"}

-- A VpnPeer with spec.profileSecret: its ProfileReady condition.
local function profile(status, reason, message)
  return {type = "ProfileReady", status = status, reason = reason, message = message or reason,
          observedGeneration = 2, lastTransitionTime = "2026-01-01T00:00:00Z"}
end

local function peer(generation, observed, conditions)
  local o = resource(generation, observed, conditions)
  o.kind = "VpnPeer"
  o.metadata.name = "alice"
  return o
end

local function stalled(reason, message)
  return {type = "Stalled", status = "True", reason = reason, message = message or reason,
          observedGeneration = 2, lastTransitionTime = "2026-01-01T00:00:00Z"}
end

-- States the reason table does not spell out: generations, ordering, messages, combinations.
local cases = {
  {"no status yet", resource(1, nil, nil), "Progressing"},
  {"status without conditions", resource(1, 1, nil), "Progressing"},
  {"Ready=True for the current generation", resource(2, 2, {cond("True", "Available"), synced}), "Healthy"},
  {"Ready=True, no observedGeneration", resource(2, nil, {cond("True", "Available")}), "Healthy"},
  {"Ready=True but a newer spec is not observed", resource(3, 2, {cond("True", "Available")}), "Progressing"},
  {"Ready=Unknown", resource(2, 2, {cond("Unknown", "Reconciling")}), "Progressing"},
  {"InvalidSpec: Stalled's message", resource(2, 2, {synced, cond("False", "InvalidSpec", "ready says"), stalled("InvalidSpec", "unknown region")}),
   "Degraded", "unknown region"},
  {"InvalidSpec for an older generation", resource(3, 2, {cond("False", "InvalidSpec"), stalled("InvalidSpec")}), "Progressing"},
  {"Stalled listed before Ready", resource(2, 2, {stalled("NotOwned", "belongs to team-b/hub"), cond("False", "NotOwned")}),
   "Degraded", "belongs to team-b/hub"},
  {"paused and Ready", resource(2, 2, {cond("True", "Available"), paused}), "Suspended", "paused"},
  {"paused before its create", resource(2, 2, {cond("False", "ReconcilePaused"), stalled("ReconcilePaused", "withheld"), paused}),
   "Suspended", "withheld"},
  {"paused and NotOwned", resource(2, 2, {cond("False", "NotOwned"), stalled("NotOwned"), paused}), "Degraded"},
  {"a planned create", resource(2, 2, {cond("False", "Planned"), stalled("Planned", "plan")}), "Suspended", "plan"},
  {"Ready kept True while a transient error retries", resource(2, 2, {cond("True", "Available"),
   {type = "Synced", status = "False", reason = "ApiError", message = "503"}}), "Healthy"},
  -- VpnPeer with spec.profileSecret.
  {"peer Ready, profile pending: its message", peer(2, 2, {cond("True", "Available"), profile("False", "ProfilePending", "waiting for the instance")}),
   "Progressing", "waiting for the instance"},
  {"peer Ready, ProfileReady Unknown", peer(2, 2, {cond("True", "Available"), profile("Unknown", "Reconciling")}), "Progressing"},
  {"peer waiting for its instance, profile pending", peer(2, 2, {cond("False", "WaitingForInstance", "waiting"), profile("False", "ProfilePending")}),
   "Progressing", "waiting"},
  {"peer Ready, SecretConflict: Stalled's message", peer(2, 2, {profile("False", "SecretConflict", "taken"), cond("True", "Available"), stalled("SecretConflict", "taken")}),
   "Degraded", "taken"},
  {"peer CredentialsError, profile pending: the failure's message", peer(2, 2, {cond("False", "CredentialsError", "token refused"), profile("False", "ProfilePending"), stalled("CredentialsError", "token refused")}),
   "Degraded", "token refused"},
  {"peer paused, profile pending", peer(2, 2, {cond("True", "Available"), profile("False", "ProfilePending"), paused}), "Suspended"},
  {"peer paused, SecretConflict", peer(2, 2, {cond("True", "Available"), profile("False", "SecretConflict"), stalled("SecretConflict"), paused}), "Degraded"},
  {"SecretConflict for an older generation", peer(3, 2, {cond("True", "Available"), profile("False", "SecretConflict"), stalled("SecretConflict")}), "Progressing"},
}

-- One case per row of the reason table (docs/status.md), generated from the same source.
local dir = (arg and arg[0] or ""):match("(.*/)") or "./"
for _, row in ipairs(dofile(dir .. "argocd-health-cases.lua")) do
  local conditions = {}
  for _, c in ipairs(row[2]) do
    c.observedGeneration = 2
    c.lastTransitionTime = "2026-01-01T00:00:00Z"
    table.insert(conditions, c)
  end
  table.insert(cases, {"table: " .. row[1], resource(2, 2, conditions), row[3]})
end

local failed = 0
for _, c in ipairs(cases) do
  local name, o, want, want_message = c[1], c[2], c[3], c[4]
  local ok, hs = pcall(health, o)
  if not ok then
    failed = failed + 1
    print("FAIL " .. name .. ": error " .. tostring(hs))
  elseif type(hs) ~= "table" or hs.status ~= want then
    failed = failed + 1
    print("FAIL " .. name .. ": got " .. tostring(hs and hs.status) .. ", want " .. want)
  elseif hs.message ~= nil and type(hs.message) ~= "string" then
    failed = failed + 1
    print("FAIL " .. name .. ": message is a " .. type(hs.message))
  elseif want_message ~= nil and hs.message ~= want_message then
    failed = failed + 1
    print("FAIL " .. name .. ": message " .. tostring(hs.message) .. ", want " .. want_message)
  else
    print("ok   " .. name .. " -> " .. hs.status)
  end
end
if failed > 0 then
  os.exit(1)
end

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

local cases = {
  {"no status yet", resource(1, nil, nil), "Progressing"},
  {"status without conditions", resource(1, 1, nil), "Progressing"},
  {"Ready=True for the current generation", resource(2, 2, {cond("True", "Available"), synced}), "Healthy"},
  {"Ready=True, no observedGeneration", resource(2, nil, {cond("True", "Available")}), "Healthy"},
  {"Ready=True but a newer spec is not observed", resource(3, 2, {cond("True", "Available")}), "Progressing"},
  {"Ready=False Provisioning", resource(2, 2, {cond("False", "Provisioning")}), "Progressing"},
  {"Ready=False Creating", resource(2, 2, {cond("False", "Creating")}), "Progressing"},
  {"Ready=False WaitingForInstance", resource(2, 2, {cond("False", "WaitingForInstance")}), "Progressing"},
  {"Ready=False ApiError (transient, retried)", resource(2, 2, {cond("False", "ApiError")}), "Progressing"},
  {"Ready=False InvalidSpec", resource(2, 2, {synced, cond("False", "InvalidSpec", "unknown region")}), "Degraded"},
  {"Ready=False HostnameTaken", resource(2, 2, {cond("False", "HostnameTaken", "hostname is taken")}), "Degraded"},
  {"Ready=False NotOwned", resource(2, 2, {cond("False", "NotOwned", "belongs to team-b/hub")}), "Degraded"},
  {"Ready=False CredentialsError", resource(2, 2, {cond("False", "CredentialsError")}), "Degraded"},
  {"Ready=Unknown", resource(2, 2, {cond("Unknown", "Reconciling")}), "Progressing"},
  {"InvalidSpec for an older generation", resource(3, 2, {cond("False", "InvalidSpec")}), "Progressing"},
  {"paused and Ready", resource(2, 2, {cond("True", "Available"), paused}), "Suspended"},
  {"paused before its create", resource(2, 2, {cond("False", "ReconcilePaused"), paused}), "Suspended"},
  {"paused and NotOwned", resource(2, 2, {cond("False", "NotOwned"), paused}), "Degraded"},
  {"a planned create", resource(2, 2, {cond("False", "Planned")}), "Suspended"},
  -- VpnPeer with spec.profileSecret ({name, object, want status, want message}).
  {"peer Ready, profile delivered", peer(2, 2, {cond("True", "Available"), profile("True", "Delivered")}), "Healthy"},
  {"peer Ready, no ProfileReady (no spec.profileSecret)", peer(2, 2, {cond("True", "Available"), synced}), "Healthy"},
  {"peer Ready, profile pending", peer(2, 2, {cond("True", "Available"), profile("False", "ProfilePending", "waiting for the instance")}),
   "Progressing", "waiting for the instance"},
  {"peer Ready, ProfileReady Unknown", peer(2, 2, {cond("True", "Available"), profile("Unknown", "Reconciling")}), "Progressing"},
  {"peer waiting for its instance, profile pending", peer(2, 2, {cond("False", "WaitingForInstance"), profile("False", "ProfilePending")}), "Progressing"},
  {"peer Ready, ProfileNotAvailable", peer(2, 2, {cond("True", "Available"), profile("False", "ProfileNotAvailable", "a site peer has no profile")}),
   "Degraded", "a site peer has no profile"},
  {"peer Ready, SecretConflict", peer(2, 2, {cond("True", "Available"), profile("False", "SecretConflict", "Secret alice-vpn is not ours")}),
   "Degraded", "Secret alice-vpn is not ours"},
  {"peer Ready, ShareTokenRejected", peer(2, 2, {cond("True", "Available"), profile("False", "ShareTokenRejected", "refused")}),
   "Degraded", "refused"},
  {"ProfileReady listed before Ready", peer(2, 2, {profile("False", "SecretConflict", "taken"), cond("True", "Available")}),
   "Degraded", "taken"},
  {"peer creating, SecretConflict", peer(2, 2, {cond("False", "Creating"), profile("False", "SecretConflict")}), "Degraded"},
  {"peer CredentialsError, profile pending: Ready's message", peer(2, 2, {cond("False", "CredentialsError", "token refused"), profile("False", "ProfilePending")}),
   "Degraded", "token refused"},
  {"peer NotOwned and SecretConflict: Ready's message", peer(2, 2, {cond("False", "NotOwned", "belongs to team-b"), profile("False", "SecretConflict")}),
   "Degraded", "belongs to team-b"},
  {"peer paused, profile pending", peer(2, 2, {cond("True", "Available"), profile("False", "ProfilePending"), paused}), "Suspended"},
  {"peer paused, SecretConflict", peer(2, 2, {cond("True", "Available"), profile("False", "SecretConflict"), paused}), "Degraded"},
  {"peer planned, profile pending", peer(2, 2, {cond("False", "Planned"), profile("False", "ProfilePending")}), "Suspended"},
  {"peer planned, ProfileNotAvailable", peer(2, 2, {cond("False", "Planned"), profile("False", "ProfileNotAvailable")}), "Degraded"},
  {"SecretConflict for an older generation", peer(3, 2, {cond("True", "Available"), profile("False", "SecretConflict")}), "Progressing"},
}

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

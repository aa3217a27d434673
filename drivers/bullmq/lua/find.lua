-- The jobs an indexed `where` names, with what list_jobs needs of each, in one round trip
-- (read only). ARGV: 1 prefix, then pairs: 2 a data key, 3 its index set (after the prefix),
-- 4 the next key, 5 its set, ...
-- Returns {"scan"} when no key given is indexed yet (ready), else {"found", rows...}, a row per
-- job: {id, "s", scheduler hash (flat), next run or nil, pending job's hash or nil, its
-- container or nil} for a job scheduler, {id, "j", hash (flat), container or nil, score or
-- nil} for a one-off job, {id, "bad", what, key type} for a record that is not a hash.
local sets = {}
for i = 2, #ARGV, 2 do
  if call("SISMEMBER", P .. "tk:indexes:ready", ARGV[i]) == 1 then
    local name = P .. ARGV[i + 1]
    if keyType(name) ~= "set" and keyType(name) ~= "none" then return {"scan"} end
    sets[#sets + 1] = name
  end
end
if #sets == 0 then return {"scan"} end
local ids
if #sets == 1 then ids = call("SMEMBERS", sets[1]) else ids = call("SINTER", unpack(sets)) end

local ZS = {"delayed", "tk:paused", "prioritized", "completed", "failed"}
local function place(jobId)
  for _, z in ipairs(ZS) do
    local s = call("ZSCORE", P .. z, jobId)
    if s then return z, s end
  end
  if call("LPOS", K.wait, jobId) then return "wait", false end
  if call("LPOS", K.active, jobId) then return "active", false end
  return false, false
end

local out = {"found"}
for _, id in ipairs(ids) do
  local skey = K.rep .. ":" .. id
  local st = keyType(skey)
  if st == "hash" then
    local nextMs = call("ZSCORE", K.rep, id)
    local current, where = false, false
    if nextMs then
      local cid = "repeat:" .. id .. ":" .. nextMs
      if keyType(P .. cid) == "hash" then
        current = call("HGETALL", P .. cid)
        where = place(cid)
      end
    end
    out[#out + 1] = {id, "s", call("HGETALL", skey), nextMs, current, where}
  elseif st ~= "none" then
    out[#out + 1] = {id, "bad", "job scheduler", st}
  elseif not string.find(id, ":", 1, true) then
    local jt = keyType(P .. id)
    if jt == "hash" then
      local where, score = place(id)
      out[#out + 1] = {id, "j", call("HGETALL", P .. id), where, score}
    elseif jt ~= "none" then
      out[#out + 1] = {id, "bad", "job", jt}
    end
  end
end
return out

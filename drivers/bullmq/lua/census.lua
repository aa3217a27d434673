-- Counts for count_jobs / count_by_name without reading whole hashes (read only).
-- ARGV: 1 prefix, 2 mode.
-- mode "jobs": 3 a container (after the prefix), 4 "z" (zset) or "l" (list), 5 first rank,
--   6 last rank, 7 "count" or "names", 8 "1" when the container is `completed` (a one-off
--   job there whose tk.outcome is "missed" is MISSED, not COMPLETED).
--   "count" returns {members read, of which `repeat:` ids (scheduler occurrences, not tickkit
--   jobs), of which MISSED}; "names" returns {members read, {name, n, ...}, {MISSED name, n,
--   ...}}, the one-off jobs per name (a key that is not a hash: name ""; a member whose key
--   is gone: not counted, as the scan skips it).
-- mode "fields": 3 a container, 4 "z" or "l", 5 first rank, 6 last rank, 7.. hash fields:
--   returns {members read, then id, kind, value for each member that is not a `repeat:` id and
--   whose key exists}: kind "at", value tk.at for a hash whose tk.at, timestamp and delay are
--   integers and that has no tk.defect (its nominal time is tk.at); "hash", the fields' values
--   for another hash; "bad", nil for a key of another type.
-- mode "types": 3 a container, 4 "z" or "l", 5 first rank, 6 last rank: returns {members read,
--   id, ...} for the members (not `repeat:` ids) whose key is neither a hash nor missing.
-- mode "schedulers": 3.. pairs (scheduler id, its score in `repeat`): returns {state, name,
--   ...} per scheduler, state "" when its hash is missing (not a job), as the scan maps them:
--   "bad" (not a hash: FAILED), "paused", "running", "scheduled", "completed".
local mode = ARGV[2]

local function tally(t, name)
  t[name] = (t[name] or 0) + 1
end

local function flat(t)
  local out = {}
  for name, n in pairs(t) do
    out[#out + 1] = name
    out[#out + 1] = n
  end
  return out
end

if mode == "jobs" then
  local key = P .. ARGV[3]
  local first, last = tonumber(ARGV[5]), tonumber(ARGV[6])
  local members
  if ARGV[4] == "z" then members = call("ZRANGE", key, first, last) else
    members = call("LRANGE", key, first, last)
  end
  local completed = ARGV[8] == "1"
  if ARGV[7] == "count" then
    local rep, missed = 0, 0
    for _, id in ipairs(members) do
      if string.sub(id, 1, 7) == "repeat:" then
        rep = rep + 1
      elseif completed then
        local o = redis.pcall("HGET", P .. id, "tk.outcome")
        if o == "missed" then missed = missed + 1 end
      end
    end
    return {#members, rep, missed}
  end
  local names, missedNames = {}, {}
  for _, id in ipairs(members) do
    if string.sub(id, 1, 7) ~= "repeat:" then
      local name, outcome
      if completed then
        local f = redis.pcall("HMGET", P .. id, "name", "tk.outcome")
        if type(f) == "table" and f["err"] then name = "" else name, outcome = f[1], f[2] end
      else
        name = redis.pcall("HGET", P .. id, "name")
        if type(name) == "table" then name = "" end  -- (an error: a key of another type)
      end
      -- a key of another type is listed unreadable, name ""; a hash without a name too; a
      -- member whose key is gone is no job
      if name or outcome or call("EXISTS", P .. id) == 1 then
        if outcome == "missed" then tally(missedNames, name or "") else
          tally(names, name or "")
        end
      end
    end
  end
  return {#members, flat(names), flat(missedNames)}
end

-- an integer as mapping._INTEGER reads one: an optional '-' and 1 to 18 digits
local function clean(v)
  if type(v) ~= "string" then return false end
  local digits = string.match(v, "^%-?(%d+)$")
  return digits ~= nil and #digits <= 18
end

if mode == "fields" or mode == "types" then
  local key = P .. ARGV[3]
  local first, last = tonumber(ARGV[5]), tonumber(ARGV[6])
  local members
  if ARGV[4] == "z" then members = call("ZRANGE", key, first, last) else
    members = call("LRANGE", key, first, last)
  end
  local fields = {}
  for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
  local out = {#members}
  local n = 1
  for _, id in ipairs(members) do
    if string.sub(id, 1, 7) ~= "repeat:" then
      if mode == "types" then
        local t = keyType(P .. id)
        if t ~= "hash" and t ~= "none" then
          n = n + 1
          out[n] = id
        end
      else
        -- the common case in one number: tk.at, timestamp and delay integers (as
        -- mapping.INTEGER_FIELDS checks them), no tk.defect: the nominal time is tk.at
        local f = redis.pcall("HMGET", P .. id, "tk.at", "timestamp", "delay", "tk.defect")
        local kind, value
        if f["err"] then
          kind, value = "bad", false  -- a key of another type
        elseif clean(f[1]) and clean(f[2]) and (not f[3] or clean(f[3])) and not f[4] then
          kind, value = "at", f[1]
        elseif f[1] or f[2] or f[3] or f[4] or call("EXISTS", P .. id) == 1 then
          kind, value = "hash", call("HMGET", P .. id, unpack(fields))
        end
        if kind then
          out[n + 1], out[n + 2], out[n + 3] = id, kind, value
          n = n + 3
        end
      end
    end
  end
  return out
end

-- the container a job is in (the scan's order, except `active` before `wait`: they differ
-- only for an id in both lists, which no script writes), or false
local ZS = {"delayed", "tk:paused", "prioritized", "completed", "failed"}
local function place(jobId, isHash)
  if isHash then
    for _, z in ipairs(ZS) do
      if call("ZSCORE", P .. z, jobId) then return z end
    end
  end
  if call("LPOS", K.active, jobId) then return "active" end
  if isHash and call("LPOS", K.wait, jobId) then return "wait" end
  return false
end
local PENDING = {delayed = true, wait = true, prioritized = true, ["tk:paused"] = true}

local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local skey = K.rep .. ":" .. id
  local t = keyType(skey)
  local state, name = "", ""
  if t == "hash" then
    local f = call("HMGET", skey, "name", "tk.paused")
    name = f[1] or ""
    if f[2] == "1" then
      state = "paused"
    else
      local millis = string.format("%d", math.floor(tonumber(ARGV[i + 1])))
      local current = P .. "repeat:" .. id .. ":" .. millis
      local isHash = keyType(current) == "hash"
      local where = place("repeat:" .. id .. ":" .. millis, isHash)
      if where == "active" then
        state = "running"
      elseif isHash and PENDING[where] then
        state = "scheduled"
      else
        state = "completed"
      end
    end
  elseif t ~= "none" then
    state = "bad"
  end
  out[#out + 1] = state
  out[#out + 1] = name
end
return out

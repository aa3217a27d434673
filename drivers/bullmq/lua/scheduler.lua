-- Create or update a job scheduler (BullMQ's addJobScheduler) and its first job.
-- ARGV: 1 prefix, 2 now, 3 scheduler id, 4 name, 5 template data (JSON), 6 template opts
--       (JSON), 7 repeat fields (JSON: pattern+tz or every), 8 first run (ms), 9 mode,
--       10 extra scheduler hash fields (JSON), 11 paused "1"/"0"
-- mode: "keep" (static sync: same repeat fields keep the stored next run), "create" (fail when
-- the id is taken), "replace" (replace whatever has the id)
-- Returns {"kept", next} / {"created", next} / {"exists"}.
local now = tonumber(ARGV[2])
local id = ARGV[3]
local skey = K.rep .. ":" .. id
local rep = cjson.decode(ARGV[7])
local mode = ARGV[9]
local extra = cjson.decode(ARGV[10])

local function same()
  local cur = call("HMGET", skey, "pattern", "tz", "every")
  return (cur[1] or false) == (rep["pattern"] or false)
    and (cur[2] or false) == (rep["tz"] or false)
    and tonumber(cur[3] or "") == tonumber(rep["every"] or "")
end

if call("EXISTS", skey) == 1 then
  if mode == "create" then return {"exists"} end
  if mode == "keep" and same() and call("ZSCORE", K.rep, id) then
    indexJob(id, skey, call("HGET", skey, "data"), "SREM")
    call("HSET", skey, "name", ARGV[4], "data", ARGV[5], "opts", ARGV[6])
    indexJob(id, skey, ARGV[5], "SADD")
    for f, v in pairs(extra) do call("HSET", skey, f, v) end
    return {"kept", tonumber(call("ZSCORE", K.rep, id))}
  end
  removeScheduler(id, now)
end
if call("EXISTS", P .. id) == 1 then
  if mode == "create" then return {"exists"} end
  removeJob(id, now)
end

local nextMs = tonumber(ARGV[8])
call("HSET", skey, "name", ARGV[4], "data", ARGV[5], "opts", ARGV[6], "ic", 1)
indexJob(id, skey, ARGV[5], "SADD")
if rep["pattern"] then call("HSET", skey, "pattern", rep["pattern"]) end
if rep["tz"] then call("HSET", skey, "tz", rep["tz"]) end
if rep["every"] then call("HSET", skey, "every", rep["every"], "offset", nextMs % rep["every"]) end
for f, v in pairs(extra) do call("HSET", skey, f, v) end
if ARGV[11] == "1" then call("HSET", skey, "tk.paused", 1) end
produce(id, nextMs, now, 1)
return {"created", nextMs}

-- Add a one-off job (BullMQ's addStandardJob / addDelayedJob, in one script).
-- ARGV: 1 prefix, 2 now (ms), 3 custom id or "", 4 name, 5 data (JSON), 6 opts (JSON),
--       7 due time (ms), 8 extra hash fields (JSON object), 9 replace "1"/"0", 10 paused "1"/"0"
-- Returns the job id, or {"exists"} when a custom id is taken and replace is "0".
local now = tonumber(ARGV[2])
local counter = call("INCR", K.id)
local jobId = ARGV[3]
if jobId == "" then
  jobId = tostring(counter)
else
  local taken = call("EXISTS", P .. jobId) == 1 or call("EXISTS", K.rep .. ":" .. jobId) == 1
  if taken then
    if ARGV[9] ~= "1" then return {"exists"} end
    if call("EXISTS", K.rep .. ":" .. jobId) == 1 then removeScheduler(jobId, now) end
    if call("EXISTS", P .. jobId) == 1 then removeJob(jobId, now) end
  end
end
local at = tonumber(ARGV[7])
local key = P .. jobId
local delay = at - now
if delay < 0 then delay = 0 end
call("HSET", key, "name", ARGV[4], "data", ARGV[5], "opts", ARGV[6], "timestamp", now,
  "delay", delay, "priority", 0, "atm", 0)
indexJob(jobId, key, ARGV[5], "SADD")
local extra = cjson.decode(ARGV[8])
for f, v in pairs(extra) do call("HSET", key, f, v) end
emit("added", "jobId", jobId, "name", ARGV[4])
if ARGV[10] == "1" then
  call("HSET", key, "tk.paused", 1)
  call("ZADD", K.tkPaused, at, jobId)
else
  enqueue(jobId, at, now, false)
end
return jobId

-- Produce a scheduler's next job when its current job is claimed (BullMQ's updateJobScheduler):
-- only when the claimed job is still the scheduler's current one, so that any number of
-- workers produce each occurrence once.
-- ARGV: 1 prefix, 2 now, 3 scheduler id, 4 claimed job id, 5 next run (ms)
-- Returns 1 when the next job was produced.
local now = tonumber(ARGV[2])
local id = ARGV[3]
if schedulerCurrent(id) ~= ARGV[4] then return 0 end
local skey = K.rep .. ":" .. id
local m = call("HMGET", skey, "limit", "endDate", "ic")
local ic = tonumber(m[3]) or 1
if tonumber(m[1]) and ic + 1 > tonumber(m[1]) then return 0 end
local nextMs = tonumber(ARGV[5])
if tonumber(m[2]) and nextMs > tonumber(m[2]) then return 0 end
if produce(id, nextMs, now, ic + 1) then
  hincr(skey, "ic", 1)
  return 1
end
return 0

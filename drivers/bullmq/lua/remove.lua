-- Remove a job scheduler (with its pending job) or a job.
-- ARGV: 1 prefix, 2 now, 3 id
-- Returns 1 removed, 0 missing, -8 the job is a scheduler's pending job (remove the scheduler).
local now = tonumber(ARGV[2])
local id = ARGV[3]
if call("EXISTS", K.rep .. ":" .. id) == 1 or call("ZSCORE", K.rep, id) then
  removeScheduler(id, now)
  return 1
end
local key = P .. id
if call("EXISTS", key) == 0 then return 0 end
local rjk = keyType(key) == "hash" and call("HGET", key, "rjk")
if rjk and schedulerCurrent(rjk) == id then return -8 end
removeJob(id, now)
call("SREM", K.tkStatic, id)
return 1

-- Extend the locks of claimed jobs (BullMQ's extendLocks).
-- ARGV: 1 prefix, 2 lock duration (ms), then pairs of job id and token.
-- Returns the ids whose lock was lost.
local lost = {}
for i = 3, #ARGV, 2 do
  local jobId, token = ARGV[i], ARGV[i + 1]
  local lockKey = P .. jobId .. ":lock"
  if call("GET", lockKey) == token then
    call("SET", lockKey, token, "PX", ARGV[2])
    call("SREM", K.stalled, jobId)
  else
    lost[#lost + 1] = jobId
  end
end
return lost

-- Return jobs of dead workers to wait (BullMQ's moveStalledJobsToWait). Runs at most once per
-- interval across all workers (the stalled-check key is the mutex).
-- ARGV: 1 prefix, 2 now, 3 max stalled count, 4 interval (ms). Returns the ids moved.
local now = tonumber(ARGV[2])
if call("EXISTS", K.stalledCheck) == 1 then return {} end
call("SET", K.stalledCheck, now, "PX", ARGV[4])
call("XTRIM", K.events, "MAXLEN", "~", maxEvents())
local maxStalled = tonumber(ARGV[3])
local moved = {}
local suspects = call("SMEMBERS", K.stalled)
if #suspects > 0 then
  call("DEL", K.stalled)
  for _, jobId in ipairs(suspects) do
    local key = P .. jobId
    if call("EXISTS", key .. ":lock") == 0 and keyType(key) ~= "hash"
        and call("LREM", K.active, 1, jobId) > 0 then
      call("ZADD", K.failed, now, jobId)  -- overwritten while it ran: failed, unread
    elseif call("EXISTS", key .. ":lock") == 0 and call("LREM", K.active, 1, jobId) > 0 then
      local stc = hincr(key, "stc", 1)
      local rjk = call("HGET", key, "rjk")
      local recurring = rjk and call("EXISTS", K.rep .. ":" .. rjk) == 1
      if stc > maxStalled and not recurring then
        call("HSET", key, "defa", "job stalled more than allowable limit")
      end
      enqueue(jobId, now, now, true)
      emit("stalled", "jobId", jobId)
      moved[#moved + 1] = jobId
    end
  end
end
local active = call("LRANGE", K.active, 0, -1)
for i = 1, #active, 5000 do
  call("SADD", K.stalled, unpack(active, i, math.min(i + 4999, #active)))
end
return moved

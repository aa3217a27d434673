-- Give claimed jobs back unrun (shutdown): active -> wait, at the end taken next, with the
-- attempt not counted (BullMQ's moveJobFromActiveToWait).
-- ARGV: 1 prefix, 2 now, then pairs of job id and lock token. Returns how many were released.
local now = tonumber(ARGV[2])
local released = 0
for i = 3, #ARGV, 2 do
  local jobId, token = ARGV[i], ARGV[i + 1]
  local key = P .. jobId
  if keyType(key) == "hash" and call("GET", key .. ":lock") == token
      and call("LREM", K.active, 1, jobId) == 1 then
    call("DEL", key .. ":lock")
    call("SREM", K.stalled, jobId)
    hincr(key, "ats", -1)
    -- updated while held (update_job): it waits for the updated time, not the next worker
    local requeue = tonumber(call("HGET", key, "tk.requeue"))
    if requeue then
      call("HDEL", key, "tk.requeue")
      hincr(key, "tk.runs0", tonumber(call("HGET", key, "atm")) or 0)
      call("HSET", key, "atm", 0)
    end
    if call("HEXISTS", key, "tk.paused") == 1 then
      local at = tonumber(call("HGET", key, "tk.at")) or now
      call("ZADD", K.tkPaused, at, jobId)
    elseif requeue then
      enqueue(jobId, requeue, now, false)
    else
      enqueue(jobId, now, now, true)
    end
    released = released + 1
  end
end
return released

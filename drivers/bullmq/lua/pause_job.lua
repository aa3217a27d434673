-- Pause or resume one job or one scheduler. A paused job waits in tickkit's own zset
-- `tk:paused` (score: its due time), out of BullMQ's states; a running job is flagged and
-- goes there when it finishes with a retry or a next run.
-- ARGV: 1 prefix, 2 now, 3 id, 4 "1" pause / "0" resume. Returns 1, or 0 when missing.
local now = tonumber(ARGV[2])
local id = ARGV[3]
local pause = ARGV[4] == "1"

local function setJob(jobId)
  local key = P .. jobId
  if pause then
    call("HSET", key, "tk.paused", 1)
    local at = false
    if call("ZSCORE", K.tkPaused, jobId) == false then at = unqueue(jobId, now) end
    if at then call("ZADD", K.tkPaused, at, jobId) end
  else
    call("HDEL", key, "tk.paused")
    local at = call("ZSCORE", K.tkPaused, jobId)
    if at then
      call("ZREM", K.tkPaused, jobId)
      enqueue(jobId, tonumber(at), now, false)
    end
  end
end

local skey = K.rep .. ":" .. id
if call("EXISTS", skey) == 1 then
  if pause then call("HSET", skey, "tk.paused", 1) else call("HDEL", skey, "tk.paused") end
  local current = schedulerCurrent(id)
  if current and keyType(P .. current) == "hash" then setJob(current) end
  return 1
end
if keyType(P .. id) ~= "hash" then return 0 end
setJob(id)
return 1

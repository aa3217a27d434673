-- Promote due delayed jobs and move up to `limit` jobs from wait/prioritized to active, each
-- locked with its own token (BullMQ's moveToActive, for several jobs in one call).
-- ARGV: 1 prefix, 2 now (ms), 3 limit, 4 token prefix, 5 lock duration (ms), 6 worker name
-- Returns {next delayed ms or -1, rate-limit ttl ms, id1, token1, fields1, id2, ...}
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local lockMs = ARGV[5]
local worker = ARGV[6]

-- promote delayed jobs that are due (up to 1000 per call)
local due = call("ZRANGEBYSCORE", K.delayed, 0, (now + 1) * 4096 - 1, "LIMIT", 0, 1000)
if #due > 0 then
  call("ZREM", K.delayed, unpack(due))
  for _, jobId in ipairs(due) do
    local key = P .. jobId
    local priority = tonumber(call("HGET", key, "priority")) or 0
    if priority > 0 then
      call("ZADD", K.prioritized, priorityScore(priority), jobId)
    else
      call("LPUSH", K.wait, jobId)
    end
    call("HSET", key, "delay", 0)
    emit("waiting", "jobId", jobId, "prev", "delayed")
  end
end

local out = {nextDelayedMs() or -1, 0}
local meta = call("HMGET", K.meta, "paused", "concurrency", "max", "duration")
if meta[1] then return out end  -- paused: BullMQ's resume sets the marker again
local concurrency = tonumber(meta[2])
local rateMax = tonumber(meta[3])
local taken = 0
while taken < limit do
  if concurrency and call("LLEN", K.active) >= concurrency then break end
  if rateMax then
    local ttl = call("PTTL", K.limiter)
    local used = tonumber(call("GET", K.limiter) or "0")
    if ttl > 0 and used >= rateMax then
      out[2] = ttl
      break
    end
  end
  local jobId = call("RPOPLPUSH", K.wait, K.active)
  if not jobId then
    local top = call("ZPOPMIN", K.prioritized)
    if top[1] then
      jobId = top[1]
      call("LPUSH", K.active, jobId)
    else
      call("DEL", K.pc)
      break
    end
  end
  local key = P .. jobId
  if call("EXISTS", key) == 0 then
    call("LREM", K.active, 1, jobId)  -- an id without a job: drop it
  else
    if rateMax then
      if call("INCR", K.limiter) == 1 then
        call("PEXPIRE", K.limiter, math.floor(math.abs(tonumber(meta[4]) or 1000)))
      end
    end
    local token = ARGV[4] .. ":" .. jobId
    call("SET", key .. ":lock", token, "PX", lockMs)
    call("HSET", key, "processedOn", now, "pb", worker)
    call("HINCRBY", key, "ats", 1)
    emit("active", "jobId", jobId, "prev", "waiting")
    local defa = call("HGET", key, "defa")
    if defa then
      -- stalled more than maxStalledCount times: fail it here (BullMQ fails it on take)
      call("DEL", key .. ":lock")
      call("LREM", K.active, -1, jobId)
      local atm = call("HINCRBY", key, "atm", 1)
      local opts = cjson.decode(call("HGET", key, "opts") or "{}")
      finishJob(jobId, "failed", "failedReason", defa, now, keepRule(opts["removeOnFail"]), {})
      emit("failed", "jobId", jobId, "failedReason", defa, "prev", "active")
    else
      taken = taken + 1
      out[#out + 1] = jobId
      out[#out + 1] = token
      out[#out + 1] = call("HGETALL", key)
    end
  end
end
-- jobs left for other workers (promoted ones included): wake them
if call("LLEN", K.wait) > 0 or call("ZCARD", K.prioritized) > 0 then
  baseMarker()
end
return out

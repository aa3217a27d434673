-- tickkit's BullMQ driver: helpers shared by every script (prepended to each one).
-- ARGV[1] of every script is the queue's key prefix, e.g. "bull:tickkit:".
local call = redis.call
local P = ARGV[1]
local K = {
  id = P .. "id", wait = P .. "wait", active = P .. "active",
  prioritized = P .. "prioritized", pc = P .. "pc", delayed = P .. "delayed",
  completed = P .. "completed", failed = P .. "failed", meta = P .. "meta",
  events = P .. "events", marker = P .. "marker", stalled = P .. "stalled",
  stalledCheck = P .. "stalled-check", limiter = P .. "limiter", rep = P .. "repeat",
  paused = P .. "paused", tkPaused = P .. "tk:paused", tkStatic = P .. "tk:static",
  tkIndexes = P .. "tk:indexes", tkRunCounts = P .. "tk:rc",
}

-- stored text decoded as a JSON object, or nil (a hash written by hand or by another tool)
local function decodeObject(text)
  if not text then return nil end
  local ok, value = pcall(cjson.decode, text)
  -- (an array decodes to a table too: its first element is at index 1)
  if ok and type(value) == "table" and value[1] == nil then return value end
  return nil
end

-- the index-set key part of a JSON scalar (driver.py's _index_value writes the same):
-- "s:<text>", "n:<%.17g>" (so 1 and 1.0 share a set), "b:true"/"b:false", "null";
-- nil for an object or array (never indexed)
local function indexValue(v)
  local t = type(v)
  if t == "string" then return "s:" .. v end
  if t == "number" then
    if v == 0 then return "n:0" end
    return "n:" .. string.format("%.17g", v)
  end
  if t == "boolean" then
    if v then return "b:true" end
    return "b:false"
  end
  if v == cjson.null then return "null" end
  return nil
end

-- an index set key that holds a set or nothing (one overwritten by another type is skipped,
-- never failing the write it belongs to; find.lua then scans for that value)
local function indexSetUsable(name)
  local t = call("TYPE", name)
  if type(t) == "table" then t = t["ok"] end
  return t == "set" or t == "none"
end

-- index (op "SADD") or unindex (op "SREM") tickkit job `id`, whose record is hash `hkey`,
-- under the data keys recorded in tk:indexes (or `keys`), from its data text. The sets a job
-- is in are written to its field tk.idx, so unindexing never depends on the data (a data
-- field edited by hand or by another tool still leaves the sets exact).
local function indexJob(id, hkey, dataText, op, keys)
  if op == "SREM" then
    local text = call("HGET", hkey, "tk.idx")
    if text then
      call("HDEL", hkey, "tk.idx")
      local ok, listed = pcall(cjson.decode, text)
      if ok and type(listed) == "table" then
        for _, name in ipairs(listed) do
          if type(name) == "string" and indexSetUsable(P .. name) then
            call("SREM", P .. name, id)
          end
        end
        return
      end
    end
  end
  keys = keys or call("SMEMBERS", K.tkIndexes)
  if #keys == 0 or type(dataText) ~= "string" then return end
  local data = decodeObject(dataText)
  if not data then return end
  local names = {}
  if op == "SADD" then
    local ok, old = pcall(cjson.decode, call("HGET", hkey, "tk.idx") or "[]")
    if ok and type(old) == "table" then
      for _, name in ipairs(old) do names[name] = true end
    end
  end
  for _, k in ipairs(keys) do
    local v = data[k]
    if v ~= nil then
      local part = indexValue(v)
      if part then
        local name = "tk:idx:" .. k .. ":" .. part
        if indexSetUsable(P .. name) then call(op, P .. name, id) end
        names[name] = true
      end
    end
  end
  if op == "SADD" then
    local list = {}
    for name in pairs(names) do list[#list + 1] = name end
    if #list > 0 then call("HSET", hkey, "tk.idx", cjson.encode(list)) end
  end
end

-- a stored integer field as HINCRBY reads it: an optional '-' and at most 18 digits
local function isInteger(text)
  return type(text) == "string" and #text <= 19 and string.match(text, "^%-?%d+$") ~= nil
end

-- HINCRBY that never fails on a field that is not an integer (the field restarts from 0)
local function hincr(key, field, by)
  local v = call("HGET", key, field)
  if v and not isInteger(v) then call("HSET", key, field, 0) end
  return call("HINCRBY", key, field, by)
end

local function keyType(key)
  local t = call("TYPE", key)
  if type(t) == "table" then return t["ok"] end
  return t
end

local function preview(text)
  if #text > 60 then return string.format("%q", string.sub(text, 1, 57) .. "...") end
  return string.format("%q", text)
end

-- why a job's record cannot be taken (naming the field), or nil when it can
local INTEGER_FIELDS = {"timestamp", "delay", "atm", "ats", "stc", "priority", "tk.at"}
local function unreadable(key)
  local t = keyType(key)
  if t ~= "hash" then return "the job key holds a " .. t .. ", not a hash" end
  local f = call("HMGET", key, "tk.defect", "name", "data", "opts", unpack(INTEGER_FIELDS))
  if f[1] then return f[1] end
  if not f[2] then return "field 'name' is missing" end
  if not f[3] then return "field 'data' is missing" end
  if f[4] and not decodeObject(f[4]) then
    return "field 'opts' is not a JSON object: " .. preview(f[4])
  end
  if not f[5] then return "field 'timestamp' is missing" end
  for i, name in ipairs(INTEGER_FIELDS) do
    local v = f[4 + i]
    if v and not isInteger(v) then
      return "field '" .. name .. "' is not an integer: " .. preview(v)
    end
  end
  return nil
end

local function maxEvents()
  local n = call("HGET", K.meta, "opts.maxLenEvents")
  if not n then
    n = 10000
    call("HSET", K.meta, "opts.maxLenEvents", n)
  end
  return n
end

local function emit(...)
  call("XADD", K.events, "MAXLEN", "~", maxEvents(), "*", "event", ...)
end

local function queuePaused()
  return call("HEXISTS", K.meta, "paused") == 1
end

-- paused, or the queue-wide concurrency reached
local function queueBlocked()
  local m = call("HMGET", K.meta, "paused", "concurrency")
  if m[1] then return true end
  if m[2] then return call("LLEN", K.active) >= tonumber(m[2]) end
  return false
end

local function baseMarker()
  if not queueBlocked() then call("ZADD", K.marker, 0, "0") end
end

local function nextDelayedMs()
  local top = call("ZRANGE", K.delayed, 0, 0, "WITHSCORES")
  if top[2] then return math.floor(tonumber(top[2]) / 4096) end
  return nil
end

local function delayMarker()
  local top = call("ZRANGE", K.delayed, 0, 0, "WITHSCORES")
  if top[2] then call("ZADD", K.marker, tonumber(top[2]) / 4096, "1") end
end

-- the delayed zset's score for a job due at `at` (ms): at * 4096 + a sequence number so
-- that jobs due in the same millisecond keep their order
local function delayedScore(at)
  local lo = at * 4096
  local hi = lo + 4095
  local top = call("ZREVRANGEBYSCORE", K.delayed, hi, lo, "WITHSCORES", "LIMIT", 0, 1)
  if top[2] then
    local s = tonumber(top[2])
    if s >= hi then return hi end
    return s + 1
  end
  return lo
end

local function priorityScore(priority)
  return priority * 4294967296 + call("INCR", K.pc) % 4294967296
end

-- put a job that is not in any state list into wait/prioritized (due now) or delayed (due
-- later, or overdue: `delayed` then hands overdue jobs out oldest first), with the events and
-- markers BullMQ's workers expect
local function enqueue(jobId, at, now, front)
  local key = P .. jobId
  if at ~= now then
    call("HSET", key, "delay", math.max(at - now, 0))
    -- (a time before 1970 is stored at 0: BullMQ's take promotes delayed scores from 0 up,
    -- so a negative one would never run; the nominal time stays in tk.at)
    call("ZADD", K.delayed, delayedScore(math.max(at, 0)), jobId)
    emit("delayed", "jobId", jobId, "delay", at)
    delayMarker()
    return
  end
  call("HSET", key, "delay", 0)
  local priority = tonumber(call("HGET", key, "priority")) or 0
  if priority > 0 then
    if front then
      call("ZADD", K.prioritized, priority * 4294967296, jobId)
    else
      call("ZADD", K.prioritized, priorityScore(priority), jobId)
    end
  elseif front then
    call("RPUSH", K.wait, jobId)
  else
    call("LPUSH", K.wait, jobId)
  end
  baseMarker()
  emit("waiting", "jobId", jobId)
end

-- take a job out of whichever waiting state holds it; returns its due time in ms (or false)
local function unqueue(jobId, now)
  local s = call("ZSCORE", K.delayed, jobId)
  if s then
    call("ZREM", K.delayed, jobId)
    return math.floor(tonumber(s) / 4096)
  end
  s = call("ZSCORE", K.tkPaused, jobId)
  if s then
    call("ZREM", K.tkPaused, jobId)
    return tonumber(s)
  end
  if call("ZREM", K.prioritized, jobId) == 1 or call("LREM", K.wait, 1, jobId) == 1
      or call("LREM", K.paused, 1, jobId) == 1 then
    local at = nil
    if keyType(P .. jobId) == "hash" then at = tonumber(call("HGET", P .. jobId, "tk.at")) end
    if at and at < now then return at end
    return now
  end
  return false
end

local function removeKeys(jobId)
  local key = P .. jobId
  -- (a tickkit one-off job's id has no ':'; a scheduler's produced jobs are never indexed)
  if not string.find(jobId, ":", 1, true) and keyType(key) == "hash" then
    indexJob(jobId, key, call("HGET", key, "data"), "SREM")
  end
  call("DEL", key, key .. ":logs", key .. ":lock", key .. ":dependencies", key .. ":processed",
    key .. ":failed", key .. ":unsuccessful")
end

-- remove a job from every state and delete it (a running occurrence finishes unrecorded)
local function removeJob(jobId, now)
  local prev = "unknown"
  if unqueue(jobId, now) then
    prev = "waiting"
  elseif call("ZREM", K.completed, jobId) == 1 then
    prev = "completed"
  elseif call("ZREM", K.failed, jobId) == 1 then
    prev = "failed"
  elseif call("LREM", K.active, 1, jobId) == 1 then
    prev = "active"
    call("SREM", K.stalled, jobId)
  end
  removeKeys(jobId)
  emit("removed", "jobId", jobId, "prev", prev)
end

-- remove a job scheduler and its pending job (one that is running finishes)
local function removeScheduler(id, now)
  local millis = call("ZSCORE", K.rep, id)
  if millis then
    local current = "repeat:" .. id .. ":" .. millis
    if call("EXISTS", P .. current) == 1 and unqueue(current, now) then
      removeKeys(current)
      emit("removed", "jobId", current, "prev", "delayed")
    end
  end
  call("ZREM", K.rep, id)
  if keyType(K.rep .. ":" .. id) == "hash" then
    indexJob(id, K.rep .. ":" .. id, call("HGET", K.rep .. ":" .. id, "data"), "SREM")
  end
  call("DEL", K.rep .. ":" .. id)
  call("SREM", K.tkStatic, id)
end

-- the id of the job a scheduler is waiting on, or nil
local function schedulerCurrent(id)
  local millis = call("ZSCORE", K.rep, id)
  if millis then return "repeat:" .. id .. ":" .. millis end
  return nil
end

-- retention: keep = true/false/count/{count=, age=} as in BullMQ's removeOnComplete/removeOnFail
local function trimFinished(target, keep, now)
  if type(keep) ~= "table" then return end
  local age = tonumber(keep["age"])
  if age then
    local ids = call("ZRANGEBYSCORE", K[target], "-inf", now - age * 1000, "LIMIT", 0, 1000)
    for _, id in ipairs(ids) do
      removeKeys(id)
      call("ZREM", K[target], id)
    end
  end
  local count = tonumber(keep["count"])
  if count and count > 0 then
    local ids = call("ZREVRANGE", K[target], count, -1)
    for _, id in ipairs(ids) do
      removeKeys(id)
    end
    call("ZREMRANGEBYRANK", K[target], 0, -(count + 1))
  end
end

local function keepRule(value)
  if value == true then return {count = 0} end     -- removeOnX: true -> remove now
  if value == false or value == nil or value == cjson.null then return {} end
  if type(value) == "number" then return {count = value} end
  if type(value) == "table" then return value end
  return {}
end

-- the job leaves `active` for completed/failed: returns false when it was removed instead
local function finishJob(jobId, target, field, value, now, rule, fields)
  local key = P .. jobId
  local count = tonumber(rule["count"])
  if count == 0 then
    removeKeys(jobId)
    return false
  end
  call("ZADD", K[target], now, jobId)
  call("HSET", key, field, value, "finishedOn", now, unpack(fields))
  if target == "failed" then call("HDEL", key, "defa") end
  trimFinished(target, rule, now)
  return true
end

local function drainedEvent()
  if call("LLEN", K.wait) == 0 and call("LLEN", K.active) == 0
      and call("ZCARD", K.prioritized) == 0 then
    emit("drained")
  end
end

-- create scheduler `id`'s job for `nextMs` from the scheduler's template (BullMQ's
-- addJobFromScheduler); returns false when that job exists already
local function produce(id, nextMs, now, count)
  local skey = K.rep .. ":" .. id
  local s = call("HMGET", skey, "name", "data", "opts", "pattern", "tz", "every", "tk.paused",
    "limit", "endDate", "offset")
  local jobId = "repeat:" .. id .. ":" .. nextMs
  local key = P .. jobId
  if call("EXISTS", key) == 1 then
    emit("duplicated", "jobId", jobId)
    return false
  end
  call("ZADD", K.rep, nextMs, id)
  call("INCR", K.id)
  local opts = {}
  local defect = nil
  if s[3] then
    opts = decodeObject(s[3])
    if not opts then
      opts = {}
      defect = "job scheduler " .. id .. ": field 'opts' is not a JSON object: " .. preview(s[3])
    end
  end
  local r = {count = count}
  if s[4] then r["pattern"] = s[4] end
  if s[5] then r["tz"] = s[5] end
  if s[6] then r["every"] = tonumber(s[6]) or s[6] end
  if s[8] then r["limit"] = tonumber(s[8]) end
  if s[9] then r["endDate"] = tonumber(s[9]) end
  if s[10] then r["offset"] = tonumber(s[10]) end
  local delay = nextMs - now
  if delay < 0 then delay = 0 end
  opts["repeat"] = r
  opts["jobId"] = jobId
  opts["delay"] = delay
  opts["timestamp"] = now
  opts["prevMillis"] = nextMs
  opts["repeatJobKey"] = id
  if opts["attempts"] == nil then opts["attempts"] = 0 end
  call("HSET", key, "name", s[1] or "", "data", s[2] or "{}", "opts", cjson.encode(opts),
    "timestamp", now, "delay", delay, "priority", tonumber(opts["priority"]) or 0, "rjk", id,
    "atm", 0)
  if defect then call("HSET", key, "tk.defect", defect) end
  emit("added", "jobId", jobId, "name", s[1])
  if s[7] then
    call("HSET", key, "tk.paused", 1)
    call("ZADD", K.tkPaused, nextMs, jobId)
  else
    enqueue(jobId, nextMs, now, false)
  end
  return true
end

-- the job hash fields a claim carries, in this order (drivers/bullmq/driver.py reads them)
local CLAIM_FIELDS = {"name", "data", "opts", "timestamp", "atm", "rjk", "tk.at", "tk.meta",
  "tk.spec", "tk.static", "tk.outcome", "tk.lastRun", "failedReason"}

-- Promote due delayed jobs and move up to `limit` jobs from wait/prioritized to active, each
-- locked with its own token `tokenPrefix:jobId` (BullMQ's moveToActive, for several jobs in
-- one call), returning the CLAIM_FIELDS of each job's hash.
-- Returns {next delayed ms or -1, rate-limit ttl ms, id1, token1, values1, id2, ...}
local function takeJobs(now, limit, tokenPrefix, lockMs, worker)
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
  if limit < 1 then return out end
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
    local why = nil
    if call("EXISTS", key) == 1 then why = unreadable(key) end
    if call("EXISTS", key) == 0 then
      call("LREM", K.active, 1, jobId)  -- an id without a job: drop it
    elseif why then
      -- a record that cannot be taken is failed here, once, and stays listable (kept
      -- whatever the retention: someone has to look at it)
      call("LREM", K.active, -1, jobId)
      call("ZADD", K.failed, now, jobId)
      if keyType(key) == "hash" then
        call("HSET", key, "failedReason", "unreadable job record: " .. why, "finishedOn", now,
          "tk.outcome", "failed")
      end
      emit("failed", "jobId", jobId, "failedReason", "unreadable job record: " .. why,
        "prev", "active")
    else
      if rateMax then
        if call("INCR", K.limiter) == 1 then
          call("PEXPIRE", K.limiter, math.floor(math.abs(tonumber(meta[4]) or 1000)))
        end
      end
      local token = tokenPrefix .. ":" .. jobId
      call("SET", key .. ":lock", token, "PX", lockMs)
      call("HSET", key, "processedOn", now, "pb", worker)
      call("HDEL", key, "tk.requeue")
      hincr(key, "ats", 1)
      emit("active", "jobId", jobId, "prev", "waiting")
      local defa = call("HGET", key, "defa")
      if defa then
        -- stalled more than maxStalledCount times: fail it here (BullMQ fails it on take)
        call("DEL", key .. ":lock")
        call("LREM", K.active, -1, jobId)
        hincr(key, "atm", 1)
        local opts = decodeObject(call("HGET", key, "opts")) or {}
        finishJob(jobId, "failed", "failedReason", defa, now, keepRule(opts["removeOnFail"]), {})
        emit("failed", "jobId", jobId, "failedReason", defa, "prev", "active")
      else
        taken = taken + 1
        out[#out + 1] = jobId
        out[#out + 1] = token
        out[#out + 1] = call("HMGET", key, unpack(CLAIM_FIELDS))
      end
    end
  end
  -- jobs left for other workers (promoted ones included): wake them
  if call("LLEN", K.wait) > 0 or call("ZCARD", K.prioritized) > 0 then
    baseMarker()
  end
  return out
end

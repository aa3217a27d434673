-- Record how a claimed job ended (BullMQ's moveToFinished / moveToDelayed).
-- ARGV: 1 prefix, 2 now (ms), 3 job id, 4 lock token, 5 "retry" or "finish",
--       6 "completed" or "failed", 7 tickkit outcome, 8 return value (JSON) or failed reason,
--       9 stack trace or "", 10 retry time (ms) or "", 11 default removeOnComplete (JSON),
--       12 default removeOnFail (JSON), 13 run started (ms) or "", 14 error text or "",
--       15 the run record (JSON {k: tickkit job id, r: record JSON, f: finished ms,
--       n: history_limit, a: history_max_age ms or null}) or "" (none kept),
--       16 the run counter: "" (not a run: MISSED) or JSON {m: the finish minute (minutes
--       since the epoch), k: how long a bucket is kept (ms)}: HINCRBY tk:rc:<m> <outcome>
--       and the minute in the index zset tk:rc,
--       17 how many jobs to claim next (0: none), 18 token prefix, 19 lock duration (ms),
--       20 worker name (17-20: BullMQ's fetchNext, one round trip per job for a busy worker)
-- Returns 0, or -1 (job gone), -2 (lock missing), -6 (lock held by another token),
-- -3 (not active): the outcome is then ignored, like BullMQ's worker does. When ARGV[17] > 0:
-- {that code, then what takeJobs returns}.
local now = tonumber(ARGV[2])

local function finish()
  local jobId = ARGV[3]
  local key = P .. jobId
  if call("EXISTS", key) == 0 then return -1 end
  if keyType(key) ~= "hash" then
    -- the record was overwritten while the job ran: it leaves active for failed, unread
    call("LREM", K.active, -1, jobId)
    call("DEL", key .. ":lock")
    call("ZADD", K.failed, now, jobId)
    return 0
  end
  local lock = call("GET", key .. ":lock")
  if lock ~= ARGV[4] then
    if lock then return -6 end
    return -2
  end
  if call("LREM", K.active, -1, jobId) < 1 then return -3 end
  call("DEL", key .. ":lock")
  call("SREM", K.stalled, jobId)

  local outcome = ARGV[7]
  -- the per-minute run counters (Driver.count_runs), in the transaction of the outcome
  if ARGV[16] ~= "" then
    local rc = cjson.decode(ARGV[16])
    local minute, kept = tonumber(rc["m"]), tonumber(rc["k"])
    local bucket = P .. "tk:rc:" .. minute
    if keyType(bucket) == "hash" or keyType(bucket) == "none" then
      call("HINCRBY", bucket, outcome, 1)
      call("PEXPIRE", bucket, kept)
    end
    if keyType(K.tkRunCounts) == "zset" or keyType(K.tkRunCounts) == "none" then
      call("ZADD", K.tkRunCounts, minute, minute)
      call("ZREMRANGEBYSCORE", K.tkRunCounts, "-inf", "(" .. (minute - math.floor(kept / 60000)))
      call("PEXPIRE", K.tkRunCounts, kept)
    end
  end
  -- the run history of the tickkit job (a sorted set by finish time, capped and aged)
  if ARGV[15] ~= "" and outcome ~= "missed" then
    local h = cjson.decode(ARGV[15])
    local limit = tonumber(h["n"]) or 0
    local runs = P .. "tk:runs:" .. h["k"]
    local t = keyType(runs)
    -- (a history key overwritten by another type is left alone: the outcome is still recorded)
    if limit > 0 and (t == "zset" or t == "none") then
      local age = tonumber(h["a"])  -- (nil: no age limit)
      call("ZADD", runs, tonumber(h["f"]), h["r"])
      if age then call("ZREMRANGEBYSCORE", runs, "-inf", "(" .. (now - age)) end
      call("ZREMRANGEBYRANK", runs, 0, -(limit + 1))
      if age then call("PEXPIRE", runs, age) else call("PERSIST", runs) end
    end
  end
  local fields = {"tk.outcome", outcome}
  if ARGV[13] ~= "" then
    fields[#fields + 1] = "tk.lastRun"
    fields[#fields + 1] = ARGV[13]
  end

  -- the scheduler this job came from keeps the run statistics of the recurring job
  local rjk = call("HGET", key, "rjk")
  if rjk and keyType(K.rep .. ":" .. rjk) == "hash" then
    local skey = K.rep .. ":" .. rjk
    hincr(skey, "tk.runs", 1)
    call("HSET", skey, "tk.lastOutcome", outcome, "tk.lastRun", ARGV[13] ~= "" and ARGV[13] or now)
    if ARGV[14] ~= "" then
      call("HSET", skey, "tk.lastError", ARGV[14])
    else
      call("HDEL", skey, "tk.lastError")
    end
  end

  local stack = {}
  if ARGV[9] ~= "" then
    local old = call("HGET", key, "stacktrace")
    if old then
      local ok, decoded = pcall(cjson.decode, old)
      if ok and type(decoded) == "table" then stack = decoded end
    end
    stack[#stack + 1] = ARGV[9]
    while #stack > 10 do table.remove(stack, 1) end
  end

  -- update_job moved this one-off job while it ran: the next run is the updated one
  local requeue = tonumber(call("HGET", key, "tk.requeue"))
  if requeue and not rjk then
    call("HDEL", key, "tk.requeue")
    local made = tonumber(call("HGET", key, "atm")) or 0
    if outcome ~= "missed" then made = made + 1 end
    hincr(key, "tk.runs0", made)
    call("HSET", key, "atm", 0, unpack(fields))
    if ARGV[5] ~= "retry" or ARGV[6] == "failed" then
      call("HSET", key, ARGV[6] == "completed" and "returnvalue" or "failedReason", ARGV[8])
    end
    if #stack > 0 then call("HSET", key, "stacktrace", cjson.encode(stack)) end
    if call("HEXISTS", key, "tk.paused") == 1 then
      call("ZADD", K.tkPaused, requeue, jobId)
    else
      enqueue(jobId, requeue, now, false)
    end
    return 0
  end

  if ARGV[5] == "retry" then
    hincr(key, "atm", 1)
    call("HSET", key, "failedReason", ARGV[8], unpack(fields))
    if #stack > 0 then call("HSET", key, "stacktrace", cjson.encode(stack)) end
    local at = tonumber(ARGV[10])
    if call("HEXISTS", key, "tk.paused") == 1 then
      call("ZADD", K.tkPaused, at, jobId)
    elseif at > now then
      enqueue(jobId, at, now, false)
    else
      enqueue(jobId, now, now, true)
    end
    return 0
  end

  local target = ARGV[6]
  local atm = tonumber(call("HGET", key, "atm") or "0") or 0
  if outcome ~= "missed" then atm = hincr(key, "atm", 1) end
  local opts = decodeObject(call("HGET", key, "opts")) or {}
  local rule
  if target == "completed" then
    if opts["removeOnComplete"] ~= nil then
      rule = keepRule(opts["removeOnComplete"])
    else
      rule = keepRule(cjson.decode(ARGV[11]))
    end
  else
    if opts["removeOnFail"] ~= nil then
      rule = keepRule(opts["removeOnFail"])
    else
      rule = keepRule(cjson.decode(ARGV[12]))
    end
    if #stack > 0 then
      fields[#fields + 1] = "stacktrace"
      fields[#fields + 1] = cjson.encode(stack)
    end
  end
  local field = target == "completed" and "returnvalue" or "failedReason"
  finishJob(jobId, target, field, ARGV[8], now, rule, fields)
  emit(target, "jobId", jobId, field, ARGV[8], "prev", "active")
  if target == "failed" and atm >= (tonumber(opts["attempts"]) or 0) then
    emit("retries-exhausted", "jobId", jobId, "attemptsMade", atm)
  end
  drainedEvent()
  return 0
end

local code = finish()
local limit = tonumber(ARGV[17]) or 0
if limit < 1 then return code end
local taken = takeJobs(now, limit, ARGV[18], ARGV[19], ARGV[20])
table.insert(taken, 1, code)
return taken

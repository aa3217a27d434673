-- Change a job's data, schedule and/or next run in one step (update_job).
-- ARGV: 1 prefix, 2 now (ms), 3 id, 4 has data "1"/"0", 5 data (JSON), 6 has schedule
--       "1"/"0", 7 repeat fields (JSON: pattern+tz or every) of a recurring schedule or "",
--       8 has next run "1"/"0", 9 next run (ms) or "", 10 the schedule spec (JSON) or ""
-- Returns {"scheduler"} / {"job"}, or {"missing"}, or {"kind"} when the schedule would turn
-- a one-off job into a recurring one or back (driver.py replaces the job then).
local now = tonumber(ARGV[2])
local id = ARGV[3]
local hasData, hasSchedule, hasNext = ARGV[4] == "1", ARGV[6] == "1", ARGV[8] == "1"
local skey = K.rep .. ":" .. id
local key = P .. id

if keyType(skey) == "hash" then
  if hasSchedule and ARGV[7] == "" then return {"kind"} end
  hincr(skey, "tk.rev", 1)
  if hasData then
    indexJob(id, skey, call("HGET", skey, "data"), "SREM")
    call("HSET", skey, "data", ARGV[5])
    indexJob(id, skey, ARGV[5], "SADD")
  end
  if hasSchedule then
    local rep = cjson.decode(ARGV[7])
    call("HDEL", skey, "pattern", "tz", "every", "offset")
    if rep["pattern"] then call("HSET", skey, "pattern", rep["pattern"]) end
    if rep["tz"] then call("HSET", skey, "tz", rep["tz"]) end
    if rep["every"] then call("HSET", skey, "every", rep["every"]) end
  end
  -- the pending job (never a running one: a claim produces the next job at once)
  local current = schedulerCurrent(id)
  local pending = current and call("EXISTS", P .. current) == 1
    and call("LPOS", K.active, current) == false
  if hasNext and ARGV[9] ~= "" then
    local nextMs = tonumber(ARGV[9])
    if pending then
      unqueue(current, now)
      removeKeys(current)
      emit("removed", "jobId", current, "prev", "delayed")
    end
    if hasSchedule then
      local rep = cjson.decode(ARGV[7])
      if rep["every"] then call("HSET", skey, "offset", nextMs % rep["every"]) end
    end
    produce(id, nextMs, now, tonumber(call("HGET", skey, "ic")) or 1)
  elseif pending and hasData then
    call("HSET", P .. current, "data", ARGV[5])
  end
  return {"scheduler"}
end

if keyType(key) ~= "hash" or string.find(id, ":", 1, true) then return {"missing"} end
if hasSchedule and ARGV[7] ~= "" then return {"kind"} end
hincr(key, "tk.rev", 1)
if hasData then
  indexJob(id, key, call("HGET", key, "data"), "SREM")
  call("HSET", key, "data", ARGV[5])
  indexJob(id, key, ARGV[5], "SADD")
end
if hasSchedule then
  if ARGV[10] == "" then
    call("HDEL", key, "tk.spec")
  else
    call("HSET", key, "tk.spec", ARGV[10])
  end
end
if hasNext and ARGV[9] ~= "" then
  local at = tonumber(ARGV[9])
  call("HSET", key, "tk.at", at)
  if call("LPOS", K.active, id) ~= false then
    -- running: its completion re-queues the job at this time (complete.lua)
    call("HSET", key, "tk.requeue", at)
  else
    local wasFinished = call("ZREM", K.completed, id) == 1 or call("ZREM", K.failed, id) == 1
    if wasFinished or unqueue(id, now) then
      hincr(key, "tk.runs0", tonumber(call("HGET", key, "atm")) or 0)
      call("HSET", key, "atm", 0)
      call("HDEL", key, "finishedOn")
      if call("HEXISTS", key, "tk.paused") == 1 then
        call("ZADD", K.tkPaused, at, id)
      else
        enqueue(id, at, now, false)
      end
    end
  end
end
return {"job"}

-- Move a waiting one-off job to another run time (tickkit's run_task_now).
-- ARGV: 1 prefix, 2 now, 3 id, 4 new time (ms). Returns 1, or 0 (missing, running, paused,
-- finished or a scheduler).
local now = tonumber(ARGV[2])
local id = ARGV[3]
local key = P .. id
if keyType(key) ~= "hash" or call("ZSCORE", K.tkPaused, id) then return 0 end
if call("EXISTS", K.rep .. ":" .. id) == 1 then return 0 end
if not unqueue(id, now) then return 0 end
local at = tonumber(ARGV[4])
call("HSET", key, "tk.at", at)
enqueue(id, at, now, false)
return 1

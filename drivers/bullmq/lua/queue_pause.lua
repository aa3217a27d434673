-- Pause or resume the whole queue the way BullMQ 6 does: `paused` in meta, jobs stay in wait.
-- ARGV: 1 prefix, 2 "paused" or "resumed"
if ARGV[2] == "paused" then
  call("HSET", K.meta, "paused", 1)
  call("DEL", K.marker)
else
  call("HDEL", K.meta, "paused")
  if call("LLEN", K.wait) + call("ZCARD", K.prioritized) > 0 then
    call("ZADD", K.marker, 0, "0")
  else
    delayMarker()
  end
end
emit(ARGV[2])
return 0

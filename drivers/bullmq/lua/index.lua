-- Backfill the index sets of some data keys for some tickkit job ids (ensure_indexes).
-- ARGV: 1 prefix, 2 data keys (JSON array), 3.. job ids (a job scheduler's id or a one-off
--       job's id; ids of jobs that are gone are skipped)
-- Returns how many ids were indexed.
local keys = cjson.decode(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local skey = K.rep .. ":" .. id
  if keyType(skey) == "hash" then
    indexJob(id, skey, call("HGET", skey, "data"), "SADD", keys)
    n = n + 1
  elseif not string.find(id, ":", 1, true) and keyType(P .. id) == "hash" then
    indexJob(id, P .. id, call("HGET", P .. id, "data"), "SADD", keys)
    n = n + 1
  end
end
return n

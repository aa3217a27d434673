-- Claim up to `limit` jobs (takeJobs in common.lua).
-- ARGV: 1 prefix, 2 now (ms), 3 limit, 4 token prefix, 5 lock duration (ms), 6 worker name
-- Returns {next delayed ms or -1, rate-limit ttl ms, id1, token1, values1, id2, ...}
return takeJobs(tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6])

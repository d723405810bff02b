-- Admission in one round trip: every moving window of the plan, then the monthly quota.
-- Atomic: if any check denies, no counter moves. Time comes from Redis, never from a server.
-- KEYS[1..n]  one sorted set per window (member = request sequence number, score = time in us)
-- KEYS[n+1]   the account's quota hash: field "YYYY-MM" = billable requests reserved, "seq"
-- ARGV[1]     cost (units this request takes)
-- ARGV[2]     monthly quota, or -1 when this request is not billable or the plan has none
-- ARGV[3..]   limit, window length in microseconds; one pair per window
-- Returns {outcome, now_us, retry_us, month, quota_used, count_1, oldest_1, count_2, oldest_2...}
-- outcome: 0 admitted, 1 rate limited, 2 quota exhausted, 3 quota of this month unknown here
-- (Redis restarted or a new month): the caller seeds it from the database and asks again.

local function year_month(seconds)
  -- Howard Hinnant's civil_from_days
  local z = math.floor(seconds / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d', year, month)
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local cost = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local n = #KEYS - 1
local quota_key = KEYS[n + 1]
local month = year_month(tonumber(time[1]))

if quota >= 0 and redis.call('HEXISTS', quota_key, month) == 0 then
  return {3, now, 0, month, 0}
end

local counts = {}
local retry = 0
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  local period = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period)
  local count = redis.call('ZCARD', KEYS[i])
  counts[i] = count
  if count + cost > limit then
    -- room for `cost` more once the (count + cost - limit)-th oldest entry leaves the window
    local wait = period
    local index = count + cost - limit - 1
    if index < count then
      local entry = redis.call('ZRANGE', KEYS[i], index, index, 'WITHSCORES')
      wait = tonumber(entry[2]) + period - now
    end
    if wait > retry then retry = wait end
  end
end

local function window_states()
  local out = {}
  for i = 1, n do
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    out[#out + 1] = counts[i]
    out[#out + 1] = oldest[2] and tonumber(oldest[2]) or -1
  end
  return out
end

local used = tonumber(redis.call('HGET', quota_key, month) or '0')
local outcome = 0
if retry > 0 then
  outcome = 1
elseif quota >= 0 and used + cost > quota then
  outcome = 2
end

if outcome == 0 then
  local last = redis.call('HINCRBY', quota_key, 'seq', cost)
  for i = 1, n do
    local period = tonumber(ARGV[2 + 2 * i])
    for seq = last - cost + 1, last do
      redis.call('ZADD', KEYS[i], now, seq)
    end
    counts[i] = counts[i] + cost
    redis.call('PEXPIRE', KEYS[i], math.ceil(period / 1000) + 1000)
  end
  if quota >= 0 then
    used = redis.call('HINCRBY', quota_key, month, cost)
  end
  -- the hash outlives a month so the quota of the month in progress is never lost
  redis.call('EXPIRE', quota_key, 400 * 86400)
end

local result = {outcome, now, retry, month, used}
for _, value in ipairs(window_states()) do result[#result + 1] = value end
return result

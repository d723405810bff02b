-- Admission in one round trip: every moving window of the plan, then the monthly quota.
-- Atomic: if any check denies, no counter moves. Time comes from Redis, never from a server.
--
-- Each window of length W is a hash of at most B + 1 sub-bucket counters (B = BUCKETS in
-- windows.py, 60): field = bucket index (floor(time / width), width = ceil(W / B) us), value =
-- units admitted in that bucket. Its size does not depend on the limit, and a request of any
-- cost is one HINCRBY. The window counts every bucket that overlaps (now - W, now], the oldest
-- one in full: the count can only over-estimate usage (never more than the limit is admitted in
-- any interval of length W), and a request is refused at most one bucket width (W / B) before
-- an exact moving window would admit it.
--
-- KEYS[1..n]  one hash per window (field = bucket index, value = units admitted in it)
-- KEYS[n+1]   the account's quota hash: field "YYYY-MM" = billable requests reserved
-- ARGV[1]     cost (units this request takes)
-- ARGV[2]     monthly quota, or -1 when this request is not billable or the plan has none
-- ARGV[3..]   limit, window length in us, bucket width in us; one triple per window
-- Returns {outcome, now_us, retry_us, month, quota_used, count_1, reset_us_1, count_2, ...}
-- count_i: units counted in window i (after this request if admitted); reset_us_i: time until
-- its oldest counted bucket stops counting (0 when empty); retry_us: time until enough of the
-- oldest counted buckets stop counting for this request to fit in every window.
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

-- floor(t / width) for integers held in doubles (exact below 2^53 us, the year 2255): the
-- division may round up across an integer, the products below cannot.
local function bucket_of(t, width)
  local index = math.floor(t / width)
  if index * width > t then index = index - 1 end
  if (index + 1) * width <= t then index = index + 1 end
  return index
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

local counts, oldest, current = {}, {}, {}
local retry = 0
for i = 1, n do
  local limit = tonumber(ARGV[3 * i])
  local period = tonumber(ARGV[3 * i + 1])
  local width = tonumber(ARGV[3 * i + 2])
  current[i] = bucket_of(now, width)
  -- the oldest bucket that overlaps (now - period, now]; any before it has left the window
  local first = bucket_of(now - period, width)
  local fields = redis.call('HGETALL', KEYS[i])
  -- units by bucket offset from `first` (0 .. current - first <= B): in time order, unsorted
  local units, expired, count = {}, {}, 0
  for j = 1, #fields, 2 do
    local offset = tonumber(fields[j]) - first
    if offset < 0 then
      expired[#expired + 1] = fields[j]
    else
      local value = tonumber(fields[j + 1])
      units[offset] = value
      count = count + value
    end
  end
  if #expired > 0 then redis.call('HDEL', KEYS[i], unpack(expired)) end
  counts[i] = count
  oldest[i] = -1
  local freed = 0
  for offset = 0, current[i] - first do
    local value = units[offset]
    if value then
      if oldest[i] < 0 then oldest[i] = first + offset end
      if count + cost <= limit then break end
      -- room for `cost` more once the oldest buckets holding (count + cost - limit) units have
      -- stopped counting: bucket k stops when (k + 1) * width <= now - period
      freed = freed + value
      if freed >= count + cost - limit then
        local wait = (first + offset + 1) * width + period - now
        if wait > retry then retry = wait end
        break
      end
    end
  end
  -- more than the limit even with every bucket gone (cost > limit): a whole window
  if count + cost > limit and freed < count + cost - limit and period > retry then
    retry = period
  end
end

local used = tonumber(redis.call('HGET', quota_key, month) or '0')
local outcome = 0
if retry > 0 then
  outcome = 1
elseif quota >= 0 and used + cost > quota then
  outcome = 2
end

-- cost 0 reads the windows without writing (the headers of an answer refused before admission)
if outcome == 0 and cost > 0 then
  for i = 1, n do
    local period = tonumber(ARGV[3 * i + 1])
    local width = tonumber(ARGV[3 * i + 2])
    redis.call('HINCRBY', KEYS[i], string.format('%.0f', current[i]), cost)
    counts[i] = counts[i] + cost
    if oldest[i] < 0 then oldest[i] = current[i] end
    -- gone once its newest bucket has left the window
    redis.call('PEXPIRE', KEYS[i], math.ceil((period + width) / 1000) + 1000)
  end
  if quota >= 0 then
    used = redis.call('HINCRBY', quota_key, month, cost)
  end
  -- the hash outlives a month so the quota of the month in progress is never lost
  redis.call('EXPIRE', quota_key, 400 * 86400)
end

local result = {outcome, now, retry, month, used}
for i = 1, n do
  local width = tonumber(ARGV[3 * i + 2])
  local period = tonumber(ARGV[3 * i + 1])
  result[#result + 1] = counts[i]
  result[#result + 1] = oldest[i] >= 0 and (oldest[i] + 1) * width + period - now or 0
end
return result

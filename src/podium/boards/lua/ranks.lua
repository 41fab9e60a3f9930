-- ranks.lua: the rank and score of several users on one board, in one round trip.
-- KEYS[1] board zset          (Pb:{board})
-- KEYS[2] board members hash  (Pm:{board}: user id -> "member|last_seq")
-- ARGV    user ids
-- Returns {total, rank1, score1, rank2, score2, ...}: rank is 0-based (-1 when the
-- user is not on the board), score is the raw zset score as a string (exact).
local total = redis.call('ZCARD', KEYS[1])
local out = {total}
for i = 1, #ARGV do
  local entry = redis.call('HGET', KEYS[2], ARGV[i])
  local rank, score = -1, ''
  if entry then
    local member = string.match(entry, '^([^|]*)')
    local r = redis.call('ZRANK', KEYS[1], member)
    if r then
      rank = r
      score = redis.call('ZSCORE', KEYS[1], member)
    end
  end
  out[#out + 1] = rank
  out[#out + 1] = score
end
return out

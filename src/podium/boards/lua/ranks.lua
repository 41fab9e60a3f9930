-- ranks.lua: the rank and score of several users on one board, in one round trip.
-- KEYS[1] board zset          (Pb:{board})
-- KEYS[2] board members hash  (Pm:{board}: user id -> "member|last_seq", or "|last_seq"
--                              for a tombstone)
-- KEYS[3] the index epoch     (Pepoch: absent while the index is lost or incomplete)
-- ARGV    user ids
-- Returns {total, rank1, score1, rank2, score2, ...}: rank is 0-based (-1 when the
-- user is not on the board), score is the raw zset score as a string (exact).
-- Returns {-1} when the answer cannot be trusted: no epoch, an entry that does not
-- parse, or a member the zset does not hold (the reader asks PostgreSQL instead).
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end
local total = redis.call('ZCARD', KEYS[1])
local out = {total}
for i = 1, #ARGV do
  local entry = redis.call('HGET', KEYS[2], ARGV[i])
  local rank, score = -1, ''
  if entry then
    local member = string.match(entry, '^([^|]*)|%d+$')
    if not member then return {-1} end
    if member ~= '' then
      local r = redis.call('ZRANK', KEYS[1], member)
      if not r then return {-1} end
      rank = r
      score = redis.call('ZSCORE', KEYS[1], member)
    end
  end
  out[#out + 1] = rank
  out[#out + 1] = score
end
return out

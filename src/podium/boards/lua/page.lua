-- page.lua: a page of one board, its total and the rows' display names, in one round trip.
--
-- KEYS[1]  board zset          (Pb:{board})
-- KEYS[2]  board members hash  (Pm:{board}: user id -> "member|last_seq"; around only)
-- KEYS[3]  the index epoch     (Pepoch: absent while the index is lost or incomplete)
-- KEYS[4]  the names hash      (Pnames: user id -> display name)
-- ARGV[1]  offset (0-based position of the first row)
-- ARGV[2]  limit (rows)
-- ARGV[3]  a cursor's member: the page starts after it while it is on the board ("" none)
-- ARGV[4]  "1": also count the members that rank strictly better than the first row
--          (competition ranking); "0": don't
-- ARGV[5]  around: a user id whose neighbours make the page ("" for a plain page); the
--          page is then rows max(0, rank - ARGV[6]) .. rank + ARGV[6]
-- ARGV[6]  around: the radius
--
-- On a Redis Cluster the names hash lives on its own slot: this script must then split
-- into the board part (KEYS[1..3] share the board's hash tag; the epoch is per slot) and
-- an HMGET of the names on KEYS[4]'s node.
--
-- Returns, MessagePack-encoded, {total, first, better, member1, score1, name1, ...}:
-- `first` is the position of the first row, `better` the count of members strictly
-- better than the first row (-1 when not asked), a score the raw zset score as text
-- (exact below 2^53), a name false when the names hash has none.
-- Returns {-1} when the index cannot be trusted (no epoch, an entry that does not parse:
-- the reader asks PostgreSQL), and {total, -1} when the around user is not on the board.
if redis.call('EXISTS', KEYS[3]) == 0 then return cmsgpack.pack({-1}) end
local zset = KEYS[1]
local total = redis.call('ZCARD', zset)
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])

if ARGV[5] ~= '' then
  local entry = redis.call('HGET', KEYS[2], ARGV[5])
  if not entry then return cmsgpack.pack({total, -1}) end
  local member = string.match(entry, '^([^|]*)|%d+$')
  if not member then return cmsgpack.pack({-1}) end
  if member == '' then return cmsgpack.pack({total, -1}) end  -- a tombstone
  local rank = redis.call('ZRANK', zset, member)
  if not rank then return cmsgpack.pack({-1}) end
  local radius = tonumber(ARGV[6])
  offset = math.max(0, rank - radius)
  limit = rank - offset + radius + 1
elseif ARGV[3] ~= '' then
  local rank = redis.call('ZRANK', zset, ARGV[3])
  if rank then offset = rank + 1 end
end

local raw = redis.call('ZRANGE', zset, offset, offset + limit - 1, 'WITHSCORES')
local better = -1
if ARGV[4] == '1' and #raw > 0 then
  better = redis.call('ZCOUNT', zset, '-inf', '(' .. raw[2])
end
local out = {total, offset, better}
if #raw == 0 then return cmsgpack.pack(out) end
local users = {}
for j = 1, #raw, 2 do
  local user = string.match(raw[j], '^%d+:(%d+)')
  if not user then return cmsgpack.pack({-1}) end
  users[#users + 1] = user
end
local names = redis.call('HMGET', KEYS[4], unpack(users))
for j = 1, #users do
  out[#out + 1] = raw[2 * j - 1]
  out[#out + 1] = raw[2 * j]
  out[#out + 1] = names[j] or false
end
return cmsgpack.pack(out)

-- load.lua: a rebuild's bulk load: board rows written to its boards aside, many per call.
--
-- KEYS: none (a board's keys are built from the layout, as in apply.lua).
-- ARGV[1]  the key layout, MessagePack-encoded (Keys.layout(), described in apply.lua)
-- ARGV[2]  the rebuild's generation: its lease "{prefix}rebuild-lock" must still hold it,
--          else an error and nothing is written
-- ARGV[3]  the rows, MessagePack-encoded, a list of groups, one board each:
--            [board, expireat, users, zpairs, hpairs]
--          expireat is unix seconds ("0" = none); users the user ids; zpairs the ZADD
--          arguments (zscore, member, ... in the users' order) and hpairs the HSET ones
--          (user, "member|version", ...), all strings; at most a few thousand users
--          (Lua unpacks the lists onto its stack); a user appears at most once per
--          board (the rows come from board_values, whose key is board and user).
--
-- The same version guard as apply.lua's rows aside, for many rows at once: one HMGET
-- reads what the board's members hash aside already holds for those users (rows a live
-- apply dual-wrote since the lease was taken, or tombstones of its voids), a row is
-- kept only when its version is newer, and the kept rows go in one ZREM (the members
-- they replace), one ZADD, one HSET and the EXPIREATs. A live write during the rebuild
-- therefore wins over an older row loaded here, in either order. When the hash holds
-- none of the users (the rule: live writes are few) the lists go to Redis as they came.
-- Returns the number of rows written.

local k = cmsgpack.unpack(ARGV[1])
local gen = ARGV[2]
if redis.call('GET', k.lock) ~= gen then return redis.error_reply('PODIUM rebuild lease lost') end
local i, j = string.find(k.aside, '{gen}', 1, true)
local aside = string.sub(k.aside, 1, i - 1) .. gen .. string.sub(k.aside, j + 1)

local written = 0
local groups = cmsgpack.unpack(ARGV[3])
for g = 1, #groups do
  local board, expireat, users, zpairs, hpairs = unpack(groups[g])
  if #users > 0 then
    local zkey, mkey = aside .. k.zset .. board, aside .. k.members .. board
    redis.call('SADD', aside .. k.boards, board)
    local stored = redis.call('HMGET', mkey, unpack(users))
    local found = false
    for r = 1, #users do
      if stored[r] then found = true break end
    end
    if found then
      local zadd, hset, zrem = {}, {}, {}
      for r = 1, #users do
        local keep, old = true, nil
        local cur = stored[r]
        if cur then
          -- "member|version", or "|version" for a tombstone; anything else is no entry.
          local m, v = string.match(cur, '^([^|]*)|(%d+)$')
          if v then
            local version = string.match(hpairs[2 * r], '|(%d+)$')
            if tonumber(v) >= tonumber(version) then
              keep = false
            elseif m ~= '' then
              old = m
            end
          end
        end
        if keep then
          zadd[#zadd + 1] = zpairs[2 * r - 1]
          zadd[#zadd + 1] = zpairs[2 * r]
          hset[#hset + 1] = users[r]
          hset[#hset + 1] = hpairs[2 * r]
          if old then zrem[#zrem + 1] = old end
        end
      end
      if #zrem > 0 then redis.call('ZREM', zkey, unpack(zrem)) end
      zpairs, hpairs = zadd, hset
    end
    if #zpairs > 0 then
      redis.call('ZADD', zkey, unpack(zpairs))
      redis.call('HSET', mkey, unpack(hpairs))
      if expireat ~= '0' then
        redis.call('EXPIREAT', zkey, expireat)
        redis.call('EXPIREAT', mkey, expireat)
      end
      written = written + #hpairs / 2
    end
  end
end
return written

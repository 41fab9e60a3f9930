-- apply.lua: apply committed board rows to the Redis index, atomically.
--
-- KEYS: none: a board's keys are named by its id, so the script builds them, from the
--       layout podium/keys.py gives it (Podium runs on one Redis, not a cluster).
-- ARGV[1]  the key layout, MessagePack-encoded (Keys.layout()): "prefix"; the fixed keys
--          "epoch", "lock" (the rebuild lease), "rebuild_aside"; "aside", the template
--          "{prefix}r:{gen}:" of a rebuild's boards aside; and the kinds a board key
--          puts between a prefix and the board id: "zset", "members", "seq", "channel",
--          and "boards" (after an aside prefix: the set of the board ids built aside)
-- ARGV[2]  "1" to capture top-10 diffs, INCR board seqs and PUBLISH; "0" to apply quietly
-- ARGV[3]  the events, MessagePack-encoded (one argument: packing thousands of
--          arguments costs the client more than running the script), a list of
--          [all_board, user_id, rows]:
--            all_board  the event's all-time board id ("" when no rank is wanted)
--            user_id
--            rows       a list of rows of 6 strings:
--              board, member ("reached_seq:user_id[:reached_at_ms]", "" removes the
--              user from the board), zscore, last_seq,
--              desc ("1" when the zset holds -value), expireat (unix seconds, "0" = none)
-- ARGV[4]  optional: a rebuild's generation. The rows then go to that rebuild's boards
--          aside ("{prefix}r:{gen}:b:{board}", ...) only, quietly, and only while the
--          rebuild holds its lease ("{prefix}rebuild-lock" = gen); else an error.
--
-- While a rebuild holds the lease, every other apply also writes its rows to the boards
-- aside and names them in "{prefix}r:{gen}:boards", so the swap (swap.lua) installs
-- boards that miss no write acknowledged during the rebuild.
-- A row is applied only when its last_seq is newer than the one stored in the board's
-- members hash, so batches applied out of order (several instances) converge. A
-- removal stores a tombstone "|last_seq" (the version of the row the void deleted):
-- an older row applied after it is refused. A removal with last_seq "0" (version
-- unknown) removes whatever is there but guards only what Redis had: callers should
-- send the version (boards/void.py does).
-- Returns, MessagePack-encoded, {rank_before_1, rank_after_1, ...}: all-time ranks (1-based,
-- 0 = not on the board) of each event's user around its rows.

local k = cmsgpack.unpack(ARGV[1])
local prefix = k.prefix

-- A rebuild's aside prefix: the layout's template with the generation in it.
local function fill(template, gen)
  local i, j = string.find(template, '{gen}', 1, true)
  return string.sub(template, 1, i - 1) .. gen .. string.sub(template, j + 1)
end

local publish = ARGV[2] == '1'
local events = cmsgpack.unpack(ARGV[3])
local loading = ARGV[4] ~= nil and ARGV[4] ~= ''

local gen = redis.call('GET', k.lock)
if loading then
  if gen ~= ARGV[4] then return redis.error_reply('PODIUM rebuild lease lost') end
  publish = false
end
local aside = gen and fill(k.aside, gen) or nil

local function rank_of(board, user)
  if board == '' then return 0 end
  local cur = redis.call('HGET', prefix .. k.members .. board, user)
  local m = cur and string.match(cur, '^([^|]+)|%d+$')
  if not m then return 0 end  -- absent, a tombstone, or not ours to trust
  local r = redis.call('ZRANK', prefix .. k.zset .. board, m)
  if not r then return 0 end
  return r + 1
end

-- Integers leave Redis as doubles; every |v| < 2^53 is exact, and '%d' prints it whole.
local function int_text(x)
  return string.format('%d', x)
end

local function top10(board, desc)
  local raw = redis.call('ZRANGE', prefix .. k.zset .. board, 0, 9, 'WITHSCORES')
  local top = {}
  for j = 1, #raw, 2 do
    -- member = "reached_seq:user_id[:reached_at_ms]"
    local reached, user, at = string.match(raw[j], '^(%d+):(%d+):?(%d*)')
    local value = tonumber(raw[j + 1])
    if desc then value = -value end
    top[#top + 1] = {
      user = user,
      value = int_text(value),
      reached = int_text(tonumber(reached)),
      at = at ~= '' and at or '0',
    }
  end
  return top
end

local out = {}
local before = {}    -- board -> top 10 before its first change in this batch
local desc_of = {}   -- board -> desc flag
local expire_of = {} -- period board -> its expireat
local order = {}     -- changed boards, in first-change order
local changed = {}   -- board -> list of users whose value changed
local changed_seen = {}

-- The entry stored for a user in a members hash: "member|last_seq", or "|last_seq" for
-- a tombstone (a void removed the row at that version). Returns the member (nil for a
-- tombstone) and the version; a value that does not parse is no entry at all.
local function stored(cur)
  if not cur then return nil, nil end
  local m, v = string.match(cur, '^([^|]*)|(%d+)$')
  if not v then return nil, nil end
  if m == '' then m = nil end
  return m, tonumber(v)
end

-- Whether a row may be applied over the stored entry; the member it replaces; and
-- the version to store. A set wins only over an older version; a removal over an older
-- or the same one (it removes the row the void deleted), or over any when it carries
-- version 0 (unknown: remove what is there). A removal leaves a tombstone at the newer
-- of the two versions, so a batch older than the void, applied late, cannot put the
-- user back.
local function admits(mkey, user, member, last_seq)
  local old_member, version = stored(redis.call('HGET', mkey, user))
  if not version then return true, nil, last_seq end
  if member ~= '' then
    if version >= last_seq then return false, nil, nil end
    return true, old_member, last_seq
  end
  if version > last_seq and last_seq > 0 then return false, nil, nil end
  return true, old_member, math.max(version, last_seq)
end

local function write_row(zkey, mkey, user, old_member, member, zscore, version, expireat)
  if old_member then redis.call('ZREM', zkey, old_member) end
  if member == '' then
    redis.call('HSET', mkey, user, '|' .. int_text(version))
    if expireat ~= '0' then redis.call('EXPIREAT', mkey, expireat) end
    return
  end
  redis.call('ZADD', zkey, zscore, member)
  redis.call('HSET', mkey, user, member .. '|' .. int_text(version))
  if expireat ~= '0' then
    redis.call('EXPIREAT', zkey, expireat)
    redis.call('EXPIREAT', mkey, expireat)
  end
end

-- A member without its time ("seq:user") whose value was reached earlier keeps the
-- member Redis has, time included.
local function with_time(old_member, member)
  if old_member and member ~= '' and not string.find(member, ':%d+:')
      and string.sub(old_member, 1, #member + 1) == member .. ':' then
    return old_member
  end
  return member
end

local aside_named = {}
local function apply_aside(board, user, member, zscore, last_seq, expireat)
  if not aside_named[board] then
    aside_named[board] = true
    redis.call('SADD', aside .. k.boards, board)
  end
  local mkey = aside .. k.members .. board
  local ok, old_member, version = admits(mkey, user, member, last_seq)
  if ok then
    write_row(aside .. k.zset .. board, mkey, user, old_member, with_time(old_member, member),
      zscore, version, expireat)
  end
end

if loading then
  for e = 1, #events do
    local user, rows = events[e][2], events[e][3]
    for r = 1, #rows do
      local row = rows[r]
      apply_aside(row[1], user, row[2], row[3], tonumber(row[4]), row[6])
    end
  end
  return cmsgpack.pack(out)
end

for e = 1, #events do
  local event = events[e]
  local all_board, user, rows = event[1], event[2], event[3]
  local rank_before = rank_of(all_board, user)
  for r = 1, #rows do
    local row = rows[r]
    local board, zscore = row[1], row[3]
    local last_seq, desc, expireat = tonumber(row[4]), row[5] == '1', row[6]
    if aside then apply_aside(board, user, row[2], zscore, last_seq, expireat) end
    local mkey = prefix .. k.members .. board
    local ok, old_member, version = admits(mkey, user, row[2], last_seq)
    local member = with_time(old_member, row[2])
    -- A removal of a user the board does not show changes nothing anyone sees.
    local visible = ok and (member ~= '' or old_member ~= nil)
    if visible and publish and not before[board] then
      before[board] = top10(board, desc)
      desc_of[board] = desc
      order[#order + 1] = board
      changed[board] = {}
      changed_seen[board] = {}
    end
    if ok then
      write_row(prefix .. k.zset .. board, mkey, user, old_member, member, zscore, version,
        expireat)
    end
    if visible then
      if expireat ~= '0' then expire_of[board] = expireat end
      if publish and not changed_seen[board][user] then
        changed_seen[board][user] = true
        local list = changed[board]
        list[#list + 1] = user
      end
    end
  end
  out[#out + 1] = rank_before
  out[#out + 1] = rank_of(all_board, user)
end

if not publish then return cmsgpack.pack(out) end

local function positions(top)
  local p = {}
  for j, entry in ipairs(top) do p[entry.user] = j end
  return p
end

local function json_users(list)
  return '[' .. table.concat(list, ',') .. ']'
end

-- Publish time (ms), so each instance can measure its pub/sub lag.
local now_parts = redis.call('TIME')
local now_ms = int_text(tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000))

for _, board in ipairs(order) do
  local after = top10(board, desc_of[board])
  local was, now = positions(before[board]), positions(after)
  local entered, left, moved, top, at = {}, {}, {}, {}, {}
  for j, entry in ipairs(after) do
    at[j] = entry.at
    if not was[entry.user] then
      entered[#entered + 1] = entry.user
    elseif was[entry.user] ~= j then
      moved[#moved + 1] = entry.user
    end
    top[#top + 1] = '[' .. entry.user .. ',' .. entry.value .. ',' .. entry.reached .. ']'
  end
  for _, entry in ipairs(before[board]) do
    if not now[entry.user] then left[#left + 1] = entry.user end
  end
  local seq = redis.call('INCR', prefix .. k.seq .. board)
  if expire_of[board] then redis.call('EXPIREAT', prefix .. k.seq .. board, expire_of[board]) end
  -- Built by hand: cjson would print large integers with 14 significant digits.
  local message = '{"board":' .. cjson.encode(board) .. ',"seq":' .. int_text(seq)
    .. ',"top":[' .. table.concat(top, ',') .. ']'
    .. ',"entered":' .. json_users(entered) .. ',"left":' .. json_users(left)
    .. ',"moved":' .. json_users(moved) .. ',"changed":' .. json_users(changed[board])
    .. ',"at":' .. json_users(at) .. ',"total":' .. int_text(redis.call('ZCARD', prefix .. k.zset .. board))
    .. ',"ts":' .. now_ms .. '}'
  redis.call('PUBLISH', prefix .. k.channel .. board, message)
end
return cmsgpack.pack(out)

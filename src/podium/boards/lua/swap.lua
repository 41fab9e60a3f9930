-- swap.lua: install a rebuild's boards, built aside, in place of the live ones, at once.
--
-- KEYS: none (a board's keys are built from the layout, as in apply.lua).
-- ARGV[1]  the key layout, MessagePack-encoded (Keys.layout()): "prefix"; the fixed keys
--          "epoch", "lock" (the rebuild lease), "rebuild_aside"; "aside", the template
--          "{prefix}r:{gen}:" of a rebuild's boards aside; and the kinds a board key
--          puts between a prefix and the board id: "zset", "members", "seq", "channel",
--          and "boards" (after an aside prefix: the set of the board ids built aside)
-- ARGV[2]  the rebuild's generation: its lease "{prefix}rebuild-lock" must still hold it
-- ARGV[3]  the epoch to store ("{prefix}epoch": the index is complete)
-- ARGV[4]  the live boards found before the rebuild, MessagePack-encoded list of board ids:
--          those the rebuild did not build are removed (nothing in the log keeps them)
-- ARGV[5]  the rebuild's aside prefix (Keys.aside(gen): "{prefix}r:{gen}:")
--
-- For each board named in "{prefix}r:{gen}:boards" the aside zset and members hash
-- replace the live ones (RENAME; the old ones are UNLINKed first, freed off the main
-- thread). The lease, the list and "{prefix}rebuild-aside" go; the epoch is set. Every
-- board swapped or removed gets its seq INCRed (kept, never reset: no subscriber sees a
-- seq go backwards) and one {"resync": true} message.
-- Returns the number of boards, or -1 when the lease was lost (nothing is changed).

local k = cmsgpack.unpack(ARGV[1])
local prefix = k.prefix
local gen, epoch = ARGV[2], ARGV[3]
local lock = k.lock
if redis.call('GET', lock) ~= gen then return -1 end

local aside = ARGV[5]
local boards = redis.call('SMEMBERS', aside .. k.boards)
local built = {}
for _, board in ipairs(boards) do
  built[board] = true
  for _, kind in ipairs({k.zset, k.members}) do
    local live = prefix .. kind .. board
    redis.call('UNLINK', live)
    if redis.call('EXISTS', aside .. kind .. board) == 1 then
      redis.call('RENAME', aside .. kind .. board, live)
    end
  end
end
for _, board in ipairs(cmsgpack.unpack(ARGV[4])) do
  if not built[board] then
    built[board] = true
    boards[#boards + 1] = board
    redis.call('UNLINK', prefix .. k.zset .. board, prefix .. k.members .. board)
  end
end
redis.call('DEL', aside .. k.boards, lock, k.rebuild_aside)
redis.call('SET', k.epoch, epoch)

for _, board in ipairs(boards) do
  local seq = redis.call('INCR', prefix .. k.seq .. board)
  redis.call('PUBLISH', prefix .. k.channel .. board,
    '{"board":' .. cjson.encode(board) .. ',"seq":' .. string.format('%d', seq)
    .. ',"resync":true}')
end
return #boards

-- The docstatus Redis store, server side: every change is checked and applied here,
-- atomically, in one call (see redis.py for the data layout and the calling side).
--
-- This is a Redis Functions library (Redis 7+): loaded once, its tables and
-- functions are then built once, not on every call as a script's are. For older
-- servers redis.py turns the same code into a script for EVALSHA; the last line
-- is where the two differ. Every operation takes the key prefix as its first
-- argument.
--
-- The rules mirror docstatus.records (apply_update, apply_complete, apply_fail,
-- apply_requeue). The tables they need are not written here: redis.py renders
-- them from docstatus.models in place of the line below, so the lifecycle has a
-- single source. They are LEGAL (set of 'current>target'), FINAL (set of
-- statuses), STAGE (status -> default stage as JSON), START and WIDTH (status ->
-- its share of the progress bar), SMOOTHING, MIN_INTERVAL (RateEstimator) and
-- LOG_SIZE.
__RULES__

-- A record is stored twice: as a hash of field -> that field's JSON text, which
-- this script reads and updates field by field, and as one JSON text, which
-- readers fetch whole. Only what a rule needs is decoded. Python-made numbers and
-- strings are thus stored exactly as Python made them; numbers this script
-- computes are written with enough digits to read back as the same double.

-- Bound on the first call: Redis 7.0 runs a library's top level without the standard
-- libraries (they are there when its functions are called).
local find, sub, byte, format, match, concat, HUGE

local function bind_libraries()
  find, sub, byte, format, match = string.find, string.sub, string.byte, string.format, string.match
  concat, HUGE = table.concat, math.huge
end

-- The key prefix and the keys of the store being called (every call names its prefix).
local P, K_SEQ, K_RECENT, K_ACTIVE, K_FINISHED, K_COUNTS, K_LOG, CHANNEL

local function use_prefix(prefix)
  if not find then bind_libraries() end
  if prefix == P then return end
  P = prefix
  K_SEQ, K_RECENT, K_ACTIVE = P .. 'seq', P .. 'recent', P .. 'active'
  K_FINISHED, K_COUNTS, K_LOG, CHANNEL = P .. 'finished', P .. 'counts', P .. 'log', P .. 'changes'
end

-- Outcomes a rule signals with error(); caught in the dispatcher.
local REFUSED, FALLBACK = 'docstatus:refused', 'docstatus:fallback'

-- JSON text ------------------------------------------------------------------

local function string_end(s, i)
  -- s[i] opens a JSON string; the index of the quote that closes it.
  local j = i + 1
  while true do
    local k = find(s, '["\\]', j)
    if byte(s, k) == 92 then j = k + 2 else return k end
  end
end

local function value_end(s, i)
  -- The index of the last character of the JSON value that starts at s[i].
  local c = byte(s, i)
  if c == 34 then return string_end(s, i) end
  if c ~= 123 and c ~= 91 then return (find(s, '[,}%]%s]', i) or (#s + 1)) - 1 end
  local depth, j = 0, i
  while true do
    local k = find(s, '["{}%[%]]', j)
    local ch = byte(s, k)
    if ch == 34 then
      j = string_end(s, k) + 1
    else
      if ch == 123 or ch == 91 then depth = depth + 1 else depth = depth - 1 end
      if depth == 0 then return k end
      j = k + 1
    end
  end
end

-- A JSON object as ordered members: {keys = {raw key}, values = {raw value}, at = {raw key -> n}}.
local function split_object(s)
  local obj = {keys = {}, values = {}, at = {}}
  local i = find(s, '%S', 2)
  if byte(s, i) == 125 then return obj end
  while true do
    local key_end = string_end(s, i)
    local key = sub(s, i, key_end)
    i = find(s, '[^%s:]', key_end + 1)
    local v_end = value_end(s, i)
    local n = obj.at[key] or (#obj.keys + 1)
    obj.keys[n], obj.values[n], obj.at[key] = key, sub(s, i, v_end), n
    i = find(s, '%S', v_end + 1)
    if byte(s, i) == 125 then return obj end
    i = find(s, '%S', i + 1)
  end
end

local function put_member(obj, key, value)
  -- Like dict assignment: an existing key keeps its place, a new one goes last.
  local n = obj.at[key]
  if not n then
    n = #obj.keys + 1
    obj.keys[n], obj.at[key] = key, n
  end
  obj.values[n] = value
end

local function join_object(obj)
  local parts = {}
  for n = 1, #obj.keys do parts[n] = obj.keys[n] .. ': ' .. obj.values[n] end
  return '{' .. concat(parts, ', ') .. '}'
end

local function fnum(x)
  -- A float as JSON that Python reads back as the same float (never as an int):
  -- 17 significant digits always name the same double.
  local s = format('%.17g', x)
  if not find(s, '[%.en]') then s = s .. '.0' end
  return s
end

local function scalar(raw)
  -- How Python sees a JSON value: 'none', 'int' or 'float' with its value, or
  -- 'other' for what this script does not reproduce (the change then runs in Python).
  if raw == nil or raw == 'null' then return 'none' end
  local value = tonumber(raw) -- nil for strings, objects, arrays, true and false
  if value == nil or value ~= value or value == HUGE or value == -HUGE then return 'other' end
  if find(raw, '[%.eE]') then return 'float', value end
  if #raw > 15 then return 'other' end -- beyond the integers a double holds exactly
  return 'int', value
end

-- Records ----------------------------------------------------------------------

local function doc_key(doc_id) return P .. 'doc:' .. doc_id end

local function json_key(doc_id) return P .. 'json:' .. doc_id end

local function load(doc_id)
  -- The stored record as {raw = {field -> JSON text}, order = {field}}, or nil.
  local flat = redis.call('HGETALL', doc_key(doc_id))
  if #flat == 0 then return nil end
  local raw, order = {}, {}
  for i = 1, #flat, 2 do
    raw[flat[i]] = flat[i + 1]
    order[#order + 1] = flat[i]
  end
  return {raw = raw, order = order}
end

local function record_json(doc)
  local parts = {}
  for n, name in ipairs(doc.order) do parts[n] = '"' .. name .. '": ' .. doc.raw[name] end
  return '{' .. concat(parts, ', ') .. '}'
end

local function unquote(raw) return sub(raw, 2, -2) end

local function status_of(doc) return unquote(doc.raw.status) end

-- The change log, the indexes and the notification of one change.
local function commit(kind, doc_id, old_status, new_status, finished_at, body)
  local seq = redis.call('INCR', K_SEQ)
  redis.call('ZADD', K_RECENT, seq, doc_id)
  if FINAL[new_status] then
    redis.call('ZREM', K_ACTIVE, doc_id)
    redis.call('ZADD', K_FINISHED, format('%.17g', finished_at), doc_id)
  else
    redis.call('ZADD', K_ACTIVE, seq, doc_id)
    if old_status and FINAL[old_status] then redis.call('ZREM', K_FINISHED, doc_id) end
  end
  if old_status ~= new_status then
    if old_status then redis.call('HINCRBY', K_COUNTS, old_status, -1) end
    redis.call('HINCRBY', K_COUNTS, new_status, 1)
  end
  redis.call('XADD', K_LOG, 'MAXLEN', '~', LOG_SIZE, seq .. '-0', 't', kind, 'd', doc_id, 'r', body)
  redis.call('PUBLISH', CHANNEL, seq)
  return seq
end

local TRACK = '^%[%s*([^,%s]+)%s*,%s*([^,%s]+)%s*,%s*([^,%s]+)%s*,%s*([^,%s]+)%s*,%s*([^,%s]+)%s*,%s*([^%]%s]+)%s*%]$'

local function split_track(raw)
  -- The six numbers of _track, each as its JSON text.
  local a, b, c, d, e, f = match(raw, TRACK)
  if not a then error(FALLBACK, 0) end
  return {a, b, c, d, e, f}
end

local function finished_at(doc)
  -- records.finished_at: when the document finished, as epoch seconds.
  local started = doc.track and doc.track[1] or match(doc.raw._track, '^%[%s*([^,%s]+)')
  return tonumber(started) + tonumber(doc.raw.elapsed_time)
end

local function store_record(doc_id, text)
  -- Stores ``text`` (a whole record as JSON) in both forms.
  local obj = split_object(text)
  local args = {}
  local doc = {raw = {}, order = {}}
  for n, key in ipairs(obj.keys) do
    local name = sub(key, 2, -2)
    args[2 * n - 1], args[2 * n] = name, obj.values[n]
    doc.raw[name], doc.order[n] = obj.values[n], name
  end
  redis.call('DEL', doc_key(doc_id))
  redis.call('HSET', doc_key(doc_id), unpack(args))
  redis.call('SET', json_key(doc_id), text)
  return doc
end

-- The rules ------------------------------------------------------------------------

local NOW_RAW, NOW_ISO, NOW

local function meta(doc)
  if not doc.meta then doc.meta = split_object(doc.raw.metadata) end
  return doc.meta
end

local function numbers(done_raw, total_raw)
  -- _check_counts: both ints and done > total is refused.
  local kd, done = scalar(done_raw)
  local kt, total = scalar(total_raw)
  if kd == 'other' or kt == 'other' then error(FALLBACK, 0) end
  if kd == 'int' and kt == 'int' and done > total then error(REFUSED, 0) end
  return done, total
end

local function merge_fields(doc, fields)
  -- records._merge_fields; ``fields`` maps a field name to its JSON text.
  if next(fields) == nil then return end
  local update = fields.metadata
  if update == 'null' then update = nil end
  if update then
    if byte(update) ~= 123 then error(FALLBACK, 0) end -- not an object
    update = split_object(update)
  end
  if (update and #update.keys > 0) or fields.chunk or fields.total_chunks then
    local m = meta(doc)
    if update then
      for n, key in ipairs(update.keys) do put_member(m, key, update.values[n]) end
    end
    if fields.chunk then put_member(m, '"chunk"', fields.chunk) end
    if fields.total_chunks then put_member(m, '"total_chunks"', fields.total_chunks) end
    doc.meta_changed = true
    numbers(m.values[m.at['"chunk"']], m.values[m.at['"total_chunks"']])
  end
  local r = doc.raw
  r.stage = fields.stage or r.stage
  r.page = fields.page or r.page
  r.total_pages = fields.total_pages or r.total_pages
  r.error = fields.error or r.error
  numbers(r.page, r.total_pages)
end

local function advance(doc, progress, progress_raw)
  -- records._advance and RateEstimator.advance
  local t = doc.track
  if progress > doc.progress then
    doc.progress, doc.raw.progress = progress, progress_raw
    local at, progress_at, ema, samples = tonumber(t[2]), tonumber(t[3]), tonumber(t[4]), tonumber(t[5])
    local dt, gained = NOW - at, progress - progress_at
    if not (gained <= 0 or dt < MIN_INTERVAL) then
      local alpha = SMOOTHING
      t[2], t[3] = NOW_RAW, progress_raw
      t[4], t[5] = fnum(alpha * (gained / dt) + (1 - alpha) * ema), format('%d', samples + 1)
    end
  end
  doc.raw.updated_at = NOW_ISO
  doc.raw.elapsed_time = fnum(math.max(0.0, NOW - tonumber(t[1])))
end

local function remaining(doc)
  -- RateEstimator.remaining, as JSON.
  local t = doc.track
  local at, ema, samples = tonumber(t[2]), tonumber(t[4]), tonumber(t[5])
  if samples < 1 then return 'null' end
  local rate = ema / (1 - (1 - SMOOTHING) ^ samples)
  if rate <= 0 or rate ~= rate or rate == HUGE then return 'null' end
  return fnum(math.max(0.0, (1.0 - doc.progress) / rate - math.max(0.0, NOW - at)))
end

local function estimate(doc, fields)
  local given = 0
  if fields.estimated_remaining then
    doc.raw.estimated_remaining, given = fields.estimated_remaining, 1
  else
    doc.raw.estimated_remaining = remaining(doc)
  end
  if tonumber(doc.track[6]) ~= given then doc.track[6] = format('%d', given) end
end

local function finish(doc, status)
  doc.status, doc.raw.status = status, '"' .. status .. '"'
  doc.raw.completed_at = NOW_ISO
  doc.raw.estimated_remaining = 'null'
  doc.track[6] = '0'
end

local function progress_for(doc, target)
  -- models.progress_for, with the units records._units picks.
  local start, width = START[target], WIDTH[target]
  if width == 0 then return start end
  local done_raw, total_raw
  if target == 'embedding_visual' then
    done_raw, total_raw = doc.raw.page, doc.raw.total_pages
  else
    local m = (doc.meta or find(doc.raw.metadata, 'chunks?"')) and meta(doc)
    if m then done_raw, total_raw = m.values[m.at['"chunk"']], m.values[m.at['"total_chunks"']] end
  end
  local kd, done = scalar(done_raw)
  local kt, total = scalar(total_raw)
  if kd == 'other' or kt == 'other' then error(FALLBACK, 0) end
  if total == nil or total == 0 or total <= 0 then return start end
  if done == nil or done == 0 then done = 0 end
  return start + math.min(math.max(done, 0), total) / total * width
end

local function refuse_if_final(doc)
  if FINAL[doc.status] then error(REFUSED, 0) end
end

local function apply_update(doc, target, progress_raw, fields)
  local current = doc.status
  if not LEGAL[current .. '>' .. target] then error(REFUSED, 0) end
  merge_fields(doc, fields)
  if not fields.stage and target ~= current then doc.raw.stage = STAGE[target] end
  if target == 'failed' then
    finish(doc, target)
    return advance(doc, doc.progress, doc.raw.progress)
  end
  if target == 'completed' then
    finish(doc, target)
    return advance(doc, 1.0, '1.0')
  end
  local progress = tonumber(progress_raw)
  if progress == nil then
    progress = progress_for(doc, target)
    progress_raw = fnum(progress)
  end
  doc.status, doc.raw.status = target, '"' .. target .. '"'
  advance(doc, progress, progress_raw)
  estimate(doc, fields)
end

local function apply_complete(doc, extra)
  refuse_if_final(doc)
  if #extra.keys > 0 then
    local m = meta(doc)
    for n, key in ipairs(extra.keys) do put_member(m, key, extra.values[n]) end
    doc.meta_changed = true
  end
  doc.raw.stage = STAGE.completed
  finish(doc, 'completed')
  advance(doc, 1.0, '1.0')
end

local function apply_fail(doc, fields)
  refuse_if_final(doc)
  if not fields.error then error(FALLBACK, 0) end
  doc.raw.error = fields.error
  doc.raw.stage = STAGE.failed
  finish(doc, 'failed')
  advance(doc, doc.progress, doc.raw.progress)
end

local function apply_requeue(doc)
  if doc.status ~= 'failed' then error(REFUSED, 0) end
  local m = meta(doc)
  local kind, attempt = scalar(m.values[m.at['"attempt"']])
  if kind == 'none' and not m.at['"attempt"'] then
    attempt = 1
  elseif kind ~= 'int' then
    error(FALLBACK, 0)
  end
  put_member(m, '"attempt"', format('%d', attempt + 1))
  doc.meta_changed = true
  local r = doc.raw
  r.status, r.progress, r.stage = '"queued"', '0.0', STAGE.queued
  r.page, r.total_pages, r.completed_at, r.estimated_remaining, r.error = 'null', 'null', 'null', 'null', 'null'
  r.started_at, r.updated_at, r.elapsed_time = NOW_ISO, NOW_ISO, '0.0'
  doc.status = 'queued'
  doc.track = {NOW_RAW, NOW_RAW, '0.0', '0.0', '0', '0'}
end

local function fields_from_args(A, kind)
  -- A[8...]: name, JSON text pairs; for 'complete', metadata keys (as JSON) and values.
  if kind == 'complete' then
    local extra = {keys = {}, values = {}, at = {}}
    for i = 8, #A, 2 do put_member(extra, A[i], A[i + 1]) end
    return extra
  end
  local fields = {}
  for i = 8, #A, 2 do fields[A[i]] = A[i + 1] end
  return fields
end

local function apply(A, doc, kind, target, progress_raw)
  local fields = fields_from_args(A, kind)
  doc.status = status_of(doc)
  doc.progress = tonumber(doc.raw.progress)
  doc.track = split_track(doc.raw._track)
  if find(doc.track[5], '%D') or find(doc.track[6], '%D') then error(FALLBACK, 0) end -- not ints
  if kind == 'update' then return apply_update(doc, target, progress_raw, fields) end
  if kind == 'complete' then return apply_complete(doc, fields) end
  if kind == 'fail' then return apply_fail(doc, fields) end
  if kind == 'requeue' then return apply_requeue(doc) end
  error(FALLBACK, 0)
end

-- Operations ------------------------------------------------------------------------

local function op_modify(A)
  -- A: doc_id, kind, now, now as ISO JSON, target, progress ('' for none), then the fields
  local doc_id = A[2]
  local doc = load(doc_id)
  if not doc then return {'missing'} end
  NOW_RAW, NOW_ISO, NOW = A[4], A[5], tonumber(A[4])
  local before = {}
  for name, value in pairs(doc.raw) do before[name] = value end
  local old_status = status_of(doc)
  local ok, err = pcall(apply, A, doc, A[3], A[6], A[7])
  if not ok then
    if err == REFUSED then return {'refused', redis.call('GET', json_key(doc_id))} end
    if err == FALLBACK then return {'fallback'} end
    error(err, 0)
  end
  if doc.meta_changed then doc.raw.metadata = join_object(doc.meta) end
  doc.raw._track = '[' .. concat(doc.track, ', ') .. ']'
  local args = {}
  for _, name in ipairs(doc.order) do
    if doc.raw[name] ~= before[name] then
      args[#args + 1] = name
      args[#args + 1] = doc.raw[name]
    end
  end
  if #args > 0 then redis.call('HSET', doc_key(doc_id), unpack(args)) end
  local body = record_json(doc)
  redis.call('SET', json_key(doc_id), body)
  local seq = commit('updated', doc_id, old_status, doc.status, finished_at(doc), body)
  return {'ok', seq, body}
end

local function op_create(A)
  -- A: doc_id, record JSON
  local doc_id = A[2]
  if redis.call('EXISTS', doc_key(doc_id)) == 1 then return {'duplicate'} end
  local doc = store_record(doc_id, A[3])
  local status = status_of(doc)
  local done = FINAL[status] and finished_at(doc)
  return {'ok', commit('created', doc_id, nil, status, done, A[3])}
end

local function op_read(A)
  -- A: doc_id. The record and its version (the seq of its last change), for a
  -- read-modify-write in Python that op_put then applies if nothing changed between.
  local doc_id = A[2]
  local text = redis.call('GET', json_key(doc_id))
  if not text then return {} end
  return {text, redis.call('ZSCORE', K_RECENT, doc_id)}
end

local function op_put(A)
  -- A: doc_id, expected version, record JSON
  local doc_id = A[2]
  local version = redis.call('ZSCORE', K_RECENT, doc_id)
  if not version or version ~= A[3] then return {'conflict'} end
  local old_status = unquote(redis.call('HGET', doc_key(doc_id), 'status'))
  local doc = store_record(doc_id, A[4])
  local status = status_of(doc)
  local done = FINAL[status] and finished_at(doc)
  return {'ok', commit('updated', doc_id, old_status, status, done, A[4])}
end

local function op_list(A)
  -- A: 'recent' or 'active', the last index wanted (-1 for all). Records, most recent first.
  local key = A[2] == 'active' and K_ACTIVE or K_RECENT
  local out = {}
  for _, doc_id in ipairs(redis.call('ZREVRANGE', key, 0, A[3])) do
    local text = redis.call('GET', json_key(doc_id))
    if text then out[#out + 1] = text end
  end
  return out
end

local function op_expire(A)
  -- A: '(' .. before, limit. Removes finished records; returns {seq, doc_id, ...}.
  local out = {}
  local ids = redis.call('ZRANGEBYSCORE', K_FINISHED, '-inf', A[2], 'LIMIT', 0, A[3])
  for _, doc_id in ipairs(ids) do
    local status = redis.call('HGET', doc_key(doc_id), 'status')
    redis.call('DEL', doc_key(doc_id), json_key(doc_id))
    redis.call('ZREM', K_RECENT, doc_id)
    redis.call('ZREM', K_ACTIVE, doc_id)
    redis.call('ZREM', K_FINISHED, doc_id)
    if status then redis.call('HINCRBY', K_COUNTS, unquote(status), -1) end
    local seq = redis.call('INCR', K_SEQ)
    redis.call('XADD', K_LOG, 'MAXLEN', '~', LOG_SIZE, seq .. '-0', 't', 'removed', 'd', doc_id)
    redis.call('PUBLISH', CHANNEL, seq)
    out[#out + 1] = seq
    out[#out + 1] = doc_id
  end
  return out
end

local OPS = {
  modify = op_modify, create = op_create, read = op_read, put = op_put, list = op_list, expire = op_expire,
}
__ENTRY__

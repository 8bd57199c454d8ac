// Follows one shape with Electric's real TypeScript client and prints one
// JSON line per event on stdout (driven by ../electric_client_test.go):
//
//   {"event":"rows","rows":[...],"handle":"…","offset":"…"}  after every up-to-date that changed the rows
//   {"event":"change","operation":"insert","key":…,"value":…,"old_value":…}  each change message received
//   {"event":"must-refetch"}                                   the client threw its rows away (409, TRUNCATE…)
//   {"event":"fetch","status":200,"url":"…"}                   every HTTP response (secret redacted)
//   {"event":"error","status":400,"message":"…"}               a non-retryable error (the stream stops)
//   {"event":"snapshot","id":1,"metadata":{…},"data":[…]}      the answer to a snapshot command
//   {"event":"snapshot-error","id":1,"status":400,"message":"…"}
//
// Usage: node sync.mjs <engine base url> <json shape params, e.g. {"table":"items","secret":"…"}> [<json stream options>]
// The options are ShapeStream options such as {"liveSse":true,"log":"changes_only"}.
// Commands on stdin, one JSON object per line, ask for subset snapshots:
//   {"id":1,"cmd":"requestSnapshot","opts":{"where":"…","params":{"1":"…"},"orderBy":"id","limit":10,"method":"POST"}}
// (requestSnapshot merges the rows into the shape; fetchSnapshot only returns them).
// It runs until killed. BigInt values (int8) are printed as strings ending
// in "n" ("42n") so the test can tell them from numbers.
import { ShapeStream, Shape } from '@electric-sql/client'

const [baseURL, rawParams, rawOptions] = process.argv.slice(2)
if (!baseURL || !rawParams) {
  process.stderr.write('usage: node sync.mjs <engine url> <json params>\n')
  process.exit(2)
}
const params = JSON.parse(rawParams)
const options = rawOptions ? JSON.parse(rawOptions) : {}

const out = (v) =>
  process.stdout.write(JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}n` : x)) + '\n')

const redact = (u) => String(u).replace(/([?&]secret=)[^&]*/, '$1…')

const stream = new ShapeStream({
  ...options,
  url: `${baseURL.replace(/\/$/, '')}/v1/shape`,
  params,
  fetchClient: async (input, init) => {
    const res = await fetch(input, init)
    out({ event: 'fetch', status: res.status, method: (init && init.method) || 'GET', url: redact(typeof input === 'string' ? input : input.url) })
    return res
  },
  onError: (e) => {
    out({ event: 'error', status: e && e.status, message: String(e && e.message ? e.message : e), json: e && e.json })
    // returning nothing stops the stream: the test fails on the error line
  },
})

stream.subscribe(
  (messages) => {
    for (const m of messages) {
      if (m.headers && m.headers.control === 'must-refetch') out({ event: 'must-refetch' })
      else if ('key' in m) {
        out({ event: 'change', operation: m.headers.operation, key: m.key, value: m.value, old_value: m.old_value })
      }
    }
  },
  (e) => out({ event: 'error', message: String(e && e.message ? e.message : e) }),
)

const shape = new Shape(stream)
const emit = (rows) => out({ event: 'rows', rows, handle: stream.shapeHandle, offset: stream.lastOffset })
shape.subscribe(({ rows }) => emit(rows))
emit(await shape.rows)

let pending = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  pending += chunk
  let nl
  while ((nl = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, nl)
    pending = pending.slice(nl + 1)
    if (line.trim() === '') continue
    const { id, cmd, opts } = JSON.parse(line)
    stream[cmd](opts).then(
      ({ metadata, data }) => out({ event: 'snapshot', id, metadata, data }),
      (e) => out({ event: 'snapshot-error', id, status: e && e.status, message: String(e && e.message ? e.message : e), json: e && e.json }),
    )
  }
})

// Follows one shape with Electric's real client and prints the shape's rows
// as a JSON line after every change (and errors as {"error": …}).
// Usage: node sync.mjs <engine url> <json params>
import { ShapeStream, Shape } from '@electric-sql/client'

const [url, rawParams] = process.argv.slice(2)
const params = JSON.parse(rawParams)
const out = (v) => process.stdout.write(JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}n` : x)) + '\n')

const stream = new ShapeStream({
  url: `${url}/v1/shape`,
  params,
  onError: (e) => {
    out({ error: String(e && e.message ? e.message : e), status: e && e.status })
  },
})
stream.subscribe((messages) => {
  for (const m of messages) {
    if (m.headers && m.headers.control === 'must-refetch') out({ event: 'must-refetch' })
  }
})
const shape = new Shape(stream)
shape.subscribe(({ rows }) => out({ rows, handle: stream.shapeHandle }))
out({ rows: await shape.rows, handle: stream.shapeHandle })

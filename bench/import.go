package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/shapelog/shapelog/engine/client"
)

// importSchema is the Airbyte JSON Schema of firenibble records.
const importSchema = `{"type":"object","properties":{
	"f0":{"type":"integer"},"f1":{"type":"integer"},"f2":{"type":"integer"},"f3":{"type":"integer"},
	"f4":{"type":"number"},"f5":{"type":"number"},"f6":{"type":"number"},"f7":{"type":"number"},
	"f8":{"type":"string"},"f9":{"type":"string"},"f10":{"type":"string"},"f11":{"type":"string"},"f12":{"type":"string"},
	"f13":{"type":"string","format":"date"},"f14":{"type":"string","format":"date"},"f15":{"type":"string","format":"date"}}}`

// importBench loads n firenibble-shaped records through
// import_airbyte_records (append, then dedup) and times COPY FROM STDIN of
// the same rows into the same kind of table.
func (h *harness) importBench(ctx context.Context, n, batch int, add func(string, ...any)) error {
	// The records, as a source would send them: taken from the table.
	fmt.Fprintf(os.Stderr, "preparing %d records…\n", n)
	var copyText bytes.Buffer
	if _, err := h.conn.PgConn().CopyTo(ctx, &copyText, fmt.Sprintf("COPY (SELECT * FROM firenibble WHERE f0 <= %d) TO STDOUT", n)); err != nil {
		return err
	}
	rows, err := h.conn.Query(ctx, fmt.Sprintf(`SELECT json_build_object('f0',f0,'f1',f1,'f2',f2,'f3',f3,'f4',f4,'f5',f5,'f6',f6,'f7',f7,
		'f8',f8,'f9',f9,'f10',f10,'f11',f11,'f12',f12,'f13',f13,'f14',f14,'f15',f15)::text FROM firenibble WHERE f0 <= %d ORDER BY f0`, n))
	if err != nil {
		return err
	}
	// The records go to a file, one a line, rather than the heap: a million
	// of them would not fit the client's memory limit, and its GC would
	// then compete with the engine for the two cores.
	recFile, err := os.CreateTemp("", "shapelog-bench-records-")
	if err != nil {
		rows.Close()
		return err
	}
	defer os.Remove(recFile.Name())
	defer recFile.Close()
	w := bufio.NewWriterSize(recFile, 1<<20)
	var offsets []int64 // where each batch starts; the file's end closes the last
	var size int64
	for i := 0; rows.Next(); i++ {
		var s []byte
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return err
		}
		if i%batch == 0 {
			offsets = append(offsets, size)
		}
		w.Write(s)
		w.WriteByte('\n')
		size += int64(len(s)) + 1
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	offsets = append(offsets, size)
	run := func(table string, key [][]string) (time.Duration, error) {
		spec := client.TableSpec{PrimaryKey: key, JSONSchema: json.RawMessage(importSchema)}
		if key != nil {
			if err := h.api.AddPrimaryKeyIndexes(ctx, map[string][][]string{table: key}); err != nil {
				return 0, err
			}
			for {
				ready, err := h.api.PrimaryKeyIndexesReady(ctx, []string{table})
				if err != nil {
					return 0, err
				}
				if ready {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		if err := h.settle(ctx); err != nil {
			return 0, err
		}
		fmt.Fprintf(os.Stderr, "importing into %s… (%s)\n", table, time.Now().Format("15:04:05.000"))
		start := time.Now()
		var buf []byte
		msgs := make([]client.Message, 0, batch)
		for b := 0; b+1 < len(offsets); b++ {
			// A batch's records, read back (from the page cache) into one buffer.
			buf = slices.Grow(buf[:0], int(offsets[b+1]-offsets[b]))[:offsets[b+1]-offsets[b]]
			if _, err := recFile.ReadAt(buf, offsets[b]); err != nil {
				return 0, err
			}
			msgs = msgs[:0]
			for rest := buf; len(rest) > 0; {
				line, after, _ := bytes.Cut(rest, []byte{'\n'})
				msgs = append(msgs, client.Message{TableName: table, Data: line})
				rest = after
			}
			if err := h.api.ImportAirbyteRecords(ctx, client.ImportRequest{Tables: map[string]client.TableSpec{table: spec}, Messages: msgs}, ""); err != nil {
				return 0, err
			}
		}
		took := time.Since(start)
		fmt.Fprintf(os.Stderr, "imported into %s (%s)\n", table, time.Now().Format("15:04:05.000"))
		return took, nil
	}
	appendTook, err := run("import_append", nil)
	if err != nil {
		return err
	}
	rss := h.peakRSS()
	dedupTook, err := run("import_dedup", [][]string{{"f0"}})
	if err != nil {
		return err
	}
	dedupRSS := h.peakRSS()
	var count int
	if err := h.conn.QueryRow(ctx, "SELECT count(*) FROM import_dedup").Scan(&count); err != nil || count != n {
		return fmt.Errorf("import_dedup has %d rows (%v), want %d", count, err, n)
	}
	// The baseline: the same rows by COPY into a table of the same column
	// types as the import made (numeric for JSON numbers, text for
	// strings), with a primary key as the dedup table has; once in the
	// published schema, so the engine replicates the rows as it does the
	// imported ones, and once in a schema it does not publish. Each phase
	// starts after a checkpoint, with the previous phase's table vacuumed and
	// the engine caught up.
	copyInto := func(table string) (time.Duration, error) {
		if _, err := h.conn.Exec(ctx, `CREATE TABLE `+table+` (LIKE import_append INCLUDING ALL); ALTER TABLE `+table+` ADD PRIMARY KEY (f0)`); err != nil {
			return 0, err
		}
		if err := h.settle(ctx); err != nil {
			return 0, err
		}
		start := time.Now()
		_, err := h.conn.PgConn().CopyFrom(ctx, bytes.NewReader(copyText.Bytes()), "COPY "+table+" (f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15) FROM STDIN")
		return time.Since(start), err
	}
	copyTook, err := copyInto("copy_target")
	if err != nil {
		return err
	}
	if _, err := h.conn.Exec(ctx, `CREATE SCHEMA unpublished`); err != nil {
		return err
	}
	aloneTook, err := copyInto("unpublished.copy_target")
	if err != nil {
		return err
	}
	copyRate := float64(n) / copyTook.Seconds()
	add("| import %d rows × 16 cols, append, batches of %d: rows/s | %s (import_airbyte_records) | %s (COPY FROM STDIN into the same column types, with PK) | %.0f%% |", n, batch, rate(n, appendTook), rate(n, copyTook), 100*float64(n)/appendTook.Seconds()/copyRate)
	add("| import, dedup on the primary key: rows/s | %s | %s | %.0f%% |", rate(n, dedupTook), rate(n, copyTook), 100*float64(n)/dedupTook.Seconds()/copyRate)
	add("| … the same COPY into a table the engine does not publish (no replication alongside) | | %s | |", rate(n, aloneTook))
	add("| engine peak RSS after append import / after dedup | %.0f MiB / %.0f MiB | | |", rss, dedupRSS)
	return nil
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// eventSink writes one JSON object per line to stdout and, optionally, to a
// file. Every object starts with "event" and "time"; the remaining fields
// depend on the event (see README.md).
type eventSink struct {
	mu  sync.Mutex
	out []io.Writer
}

func newEventSink(file string) (*eventSink, func(), error) {
	s := &eventSink{out: []io.Writer{os.Stdout}}
	closeFn := func() {}
	if file != "" {
		f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("open events file: %w", err)
		}
		s.out = append(s.out, f)
		closeFn = func() { _ = f.Close() }
	}
	return s, closeFn, nil
}

// emit writes the event. fields may be nil. The "event" and "time" keys are
// written first so that the lines are easy to read.
func (s *eventSink) emit(event string, fields map[string]any) {
	var buf bytes.Buffer
	head, _ := json.Marshal(event)
	buf.WriteString(`{"event":`)
	buf.Write(head)
	buf.WriteString(`,"time":"`)
	buf.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	buf.WriteByte('"')
	if len(fields) > 0 {
		rest, err := json.Marshal(fields)
		if err != nil {
			rest, _ = json.Marshal(map[string]string{"marshalError": err.Error()})
		}
		// rest is "{...}": splice its members after the head.
		if len(rest) > 2 {
			buf.WriteByte(',')
			buf.Write(rest[1 : len(rest)-1])
		}
	}
	buf.WriteString("}\n")

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.out {
		_, _ = w.Write(buf.Bytes())
	}
}

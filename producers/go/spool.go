package nodemeter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// The spool: records the broker did not acknowledge, appended (and fsynced) to
// SpoolDir/nodemeter-go.spool by Flush and Close, and sent again by
// Meter.ReplaySpool. A frame is topic, key and value, each with a 4-byte
// big-endian length, then the CRC-32 of those bytes; a torn last frame (a crash
// while writing) is dropped on replay. A replay sends the same bytes, so a
// record that did reach the broker before is a duplicate the worker drops.
const spoolFile = "nodemeter-go.spool"

type spool struct {
	dir string
	mu  sync.Mutex
}

type spooled struct{ topic, key, value []byte }

func (s *spool) path() string      { return filepath.Join(s.dir, spoolFile) }
func (s *spool) replaying() string { return s.path() + ".replaying" }

func (s *spool) append(recs []spooled) error {
	if len(recs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	var buf []byte
	for _, r := range recs {
		start := len(buf)
		for _, part := range [][]byte{r.topic, r.key, r.value} {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(part)))
			buf = append(buf, part...)
		}
		buf = binary.BigEndian.AppendUint32(buf, crc32.ChecksumIEEE(buf[start:]))
	}
	_, werr := f.Write(buf)
	serr := f.Sync()
	cerr := f.Close()
	return errors.Join(werr, serr, cerr)
}

// take moves the spool aside (a leftover from a replay that crashed first) and
// returns its records.
func (s *spool) take() ([]spooled, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.replaying()); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(s.path(), s.replaying()); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
	}
	f, err := os.Open(s.replaying())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readFrames(bufio.NewReader(f)), nil
}

func readFrames(r io.Reader) []spooled {
	var out []spooled
	for {
		var frame []byte
		var parts [3][]byte
		for i := range parts {
			var n [4]byte
			if _, err := io.ReadFull(r, n[:]); err != nil {
				return out
			}
			size := binary.BigEndian.Uint32(n[:])
			if size > 4*MaxEventBytes {
				return out // not a frame this SDK wrote: the rest is torn
			}
			parts[i] = make([]byte, size)
			if _, err := io.ReadFull(r, parts[i]); err != nil {
				return out
			}
			frame = append(append(frame, n[:]...), parts[i]...)
		}
		var sum [4]byte
		if _, err := io.ReadFull(r, sum[:]); err != nil || binary.BigEndian.Uint32(sum[:]) != crc32.ChecksumIEEE(frame) {
			return out
		}
		out = append(out, spooled{parts[0], parts[1], parts[2]})
	}
}

func (s *spool) done() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return os.Remove(s.replaying())
}

// deliveryErrors splits err (as Flush returns it) into delivery failures and the rest.
func deliveryErrors(err error) (failed []*DeliveryError, rest []error) {
	if err == nil {
		return nil, nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			f, r := deliveryErrors(e)
			failed, rest = append(failed, f...), append(rest, r...)
		}
		return failed, rest
	}
	var de *DeliveryError
	if errors.As(err, &de) {
		return []*DeliveryError{de}, nil
	}
	return nil, []error{err}
}

// ReplaySpool sends the spooled records again and waits for them; those that
// fail again go back to the spool. It returns how many were delivered. Call it
// when the process starts (and whenever the broker is back).
func (m *Meter) ReplaySpool(ctx context.Context) (int, error) {
	if m.spool == nil {
		return 0, nil
	}
	recs, err := m.spool.take()
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	for _, r := range recs {
		if err := m.sink.Send(ctx, string(r.topic), r.key, r.value); err != nil {
			return 0, fmt.Errorf("nodemeter: replaying the spool: %w", err)
		}
	}
	failed, rest := deliveryErrors(m.sink.Flush(ctx))
	if len(rest) > 0 {
		// unknown outcome: keep the file; the next replay resends (deduped)
		return 0, errors.Join(rest...)
	}
	again := make([]spooled, len(failed))
	for i, f := range failed {
		again[i] = spooled{[]byte(f.Topic), f.Key, f.Value}
	}
	if err := m.spool.append(again); err != nil {
		return 0, err
	}
	return len(recs) - len(failed), m.spool.done()
}

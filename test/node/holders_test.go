package node_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// record is one line of a key holder's report (test/node/keyholder).
type record struct {
	Event     string    `json:"event"`
	Time      time.Time `json:"time"`
	Pod       string    `json:"pod"`
	PodUID    string    `json:"pod_uid"`
	Container string    `json:"container"`
	Pubkeys   []string  `json:"pubkeys"`
	Error     string    `json:"error,omitempty"`
}

// holding is what one key holder container reported: it held Pubkeys from
// Start (its first record, before decryption) to End (its last record).
type holding struct {
	Container, Pod, PodUID string
	Pubkeys                []string
	Start, End             time.Time
	Loaded, Stopped        bool
	Errors                 []string
}

// readReports reads every report in dir, by container ID.
func readReports(dir string) (map[string]*holding, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	out := map[string]*holding{}
	for _, f := range files {
		h, err := readReport(f)
		if err != nil {
			return nil, err
		}
		if h != nil {
			out[h.Container] = h
		}
	}
	return out, nil
}

func readReport(file string) (*holding, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var h *holding
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			break // a line being written
		}
		if h == nil {
			h = &holding{Container: r.Container, Pod: r.Pod, PodUID: r.PodUID, Start: r.Time}
		}
		switch r.Event {
		case "loading":
			h.Pubkeys = r.Pubkeys
		case "loaded":
			h.Loaded = true
			if strings.Join(r.Pubkeys, ",") != strings.Join(h.Pubkeys, ",") {
				h.Errors = append(h.Errors, fmt.Sprintf("decrypted keys %v differ from the keystores' %v", r.Pubkeys, h.Pubkeys))
			}
		case "stopped":
			h.Stopped = true
		case "error":
			h.Errors = append(h.Errors, r.Error)
		}
		h.End = r.Time
	}
	return h, sc.Err()
}

// runtimeContainer is a container as the runtime (crictl ps) lists it.
type runtimeContainer struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Labels map[string]string `json:"labels"`
}

func (c *cluster) containers(state string) ([]runtimeContainer, error) {
	var out struct {
		Containers []runtimeContainer `json:"containers"`
	}
	args := []string{"ps", "-o", "json"}
	if state != "" {
		args = append(args, "--state", state)
	} else {
		args = append(args, "-a")
	}
	if err := c.crictlJSON(&out, args...); err != nil {
		return nil, err
	}
	return out.Containers, nil
}

// watch samples the runtime every 250 ms: for every running key holder
// container the keys its report names, and records any moment at which two
// running containers hold one key. It also keeps which containers it has seen
// running, for the final check of the reports.
type watch struct {
	c    *cluster
	dir  string
	stop chan struct{}
	done chan struct{}

	mu         sync.Mutex
	violations []string
	running    map[string]bool // running at the last sample
	samples    int
	errs       int
	lastErr    error
}

func (c *cluster) watchHolders(dir string) *watch {
	w := &watch{c: c, dir: dir, stop: make(chan struct{}), done: make(chan struct{}), running: map[string]bool{}}
	go sampleEvery(w.sample, w.stop, w.done)
	return w
}

// sampleEvery calls sample at once and every 250 ms until stop is closed,
// then closes done.
func sampleEvery(sample func(), stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		sample()
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

func (w *watch) sample() {
	cs, err := w.c.containers("running")
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs++
		w.lastErr = err
		return
	}
	w.samples++
	running := map[string]bool{}
	byKey := map[string][]string{}
	for _, c := range cs {
		if c.Metadata.Name != "validator" {
			continue
		}
		running[c.ID] = true
		h, err := readReport(filepath.Join(w.dir, c.ID+".jsonl"))
		if err != nil || h == nil {
			continue // not started yet: holds nothing it has read
		}
		for _, k := range h.Pubkeys {
			byKey[k] = append(byKey[k], fmt.Sprintf("%s (pod %s uid %s)", short(c.ID), h.Pod, h.PodUID))
		}
	}
	w.running = running
	for k, holders := range byKey {
		if len(holders) > 1 {
			w.violations = append(w.violations, fmt.Sprintf("%s: key %s held by %d running containers: %s",
				time.Now().UTC().Format(time.RFC3339Nano), short(k), len(holders), strings.Join(holders, ", ")))
		}
	}
}

// check fails t for any moment a key was held twice, by the runtime samples
// and by the reports' holding intervals (a container still running counts as
// holding to the end), and for any key holder error.
func (w *watch) check(t *testing.T) {
	t.Helper()
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.violations {
		t.Errorf("runtime sample: %s", v)
	}
	if w.samples == 0 {
		t.Errorf("no runtime sample succeeded (%d errors, last: %v)", w.errs, w.lastErr)
	}
	hs, err := readReports(w.dir)
	if err != nil {
		t.Fatal(err)
	}
	for id, h := range hs {
		for _, e := range h.Errors {
			t.Errorf("key holder %s (pod %s): %s", short(id), h.Pod, e)
		}
	}
	for _, c := range conflicts(hs, w.running) {
		t.Error(c)
	}
}

// conflicts lists every key two containers held at once by their reports: a
// container still running holds its keys past its last record.
func conflicts(hs map[string]*holding, running map[string]bool) []string {
	far := time.Now().Add(time.Hour)
	byKey := map[string][]*holding{}
	for id, h := range hs {
		hh := *h
		if running[id] {
			hh.End = far
		}
		for _, k := range h.Pubkeys {
			byKey[k] = append(byKey[k], &hh)
		}
	}
	var out []string
	for k, list := range byKey {
		sort.Slice(list, func(i, j int) bool { return list[i].Start.Before(list[j].Start) })
		for i := 1; i < len(list); i++ {
			a, b := list[i-1], list[i]
			if !b.Start.After(a.End) {
				out = append(out, fmt.Sprintf("key %s held twice: by %s (pod %s uid %s) %s..%s and by %s (pod %s uid %s) from %s",
					short(k), short(a.Container), a.Pod, a.PodUID, ts(a.Start), ts(a.End), short(b.Container), b.Pod, b.PodUID, ts(b.Start)))
			}
		}
	}
	sort.Strings(out)
	return out
}

func (w *watch) close() {
	close(w.stop)
	<-w.done
}

func short(s string) string {
	if len(s) > 14 {
		return s[:14]
	}
	return s
}

func ts(t time.Time) string { return t.UTC().Format("15:04:05.000") }

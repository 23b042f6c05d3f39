package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestValidatorKeysOnRealCluster runs deploy/overlays/single and the example
// validator StatefulSet on the real node and goes through everything that
// moves pods and keys around. After every step: every pod that should hold
// keys has a running key holder that loaded keysPerPod keys, and at no moment
// did two running containers hold one key (runtime samples every 250 ms and
// the key holders' own holding intervals).
func TestValidatorKeysOnRealCluster(t *testing.T) {
	c := need(t)
	mainNS.Lock()
	t.Cleanup(mainNS.Unlock) // first registered, last run: after the namespace is gone
	t.Cleanup(func() {
		c.deleteNamespace(t, mainSpace)
		if _, err := c.kubectl(context.Background(), "delete", "pv", "pkmanager-data-single", "--ignore-not-found"); err != nil {
			t.Error(err)
		}
	})
	t0 := time.Now()
	d := c.deploy(t, "single", "")
	t.Logf("deploy/overlays/single applied, pkmanager Ready in %s", time.Since(t0).Round(time.Millisecond))
	d.checkServerPod(t)

	w := c.watchHolders(d.reports)
	defer w.close()
	c.mustKubectl(t, "apply", "-k", filepath.Join(d.dir, "validators"), "--validate=strict")

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		s := time.Now()
		ok := t.Run(name, func(t *testing.T) {
			f(t)
			w.check(t)
		})
		t.Logf("%s: %s", name, time.Since(s).Round(time.Millisecond))
		if !ok {
			t.FailNow()
		}
	}

	var first map[string]*holding
	step("scale 0 to 3", func(t *testing.T) {
		d.scale(t, 3)
		first = d.holders(t, "validator-0", "validator-1", "validator-2")
	})

	var released []string
	step("scale 3 to 1", func(t *testing.T) {
		keep := first["validator-0"].Container
		d.scale(t, 1)
		d.gone(t, first["validator-1"], first["validator-2"])
		if h := d.holders(t, "validator-0"); h["validator-0"].Container != keep {
			t.Fatalf("validator-0 runs container %s, want %s: scaling down touched it", short(h["validator-0"].Container), short(keep))
		}
		released = append(slices.Clone(first["validator-1"].Pubkeys), first["validator-2"].Pubkeys...)
		d.cooled(t, len(released))
	})

	step("released keys reused after the delay", func(t *testing.T) {
		d.scale(t, 3)
		h := d.holders(t, "validator-1", "validator-2")
		got := append(slices.Clone(h["validator-1"].Pubkeys), h["validator-2"].Pubkeys...)
		sort.Strings(got)
		sort.Strings(released)
		if !slices.Equal(got, released) {
			t.Fatalf("the new pods hold %v, want the 4 released keys %v (available keys are handed out before new ones are minted)", got, released)
		}
		for _, p := range []string{"validator-1", "validator-2"} {
			for _, was := range first {
				if was.Pod == "validator-0" || !overlaps(was.Pubkeys, h[p].Pubkeys) {
					continue
				}
				old := d.report(t, was.Container) // to its end
				if !old.Stopped {
					t.Errorf("%s's old container %s left no stopped record", old.Pod, short(old.Container))
				}
				if gap := h[p].Start.Sub(old.End); gap < reuseDelay {
					t.Errorf("%s got keys of %s %s after that container stopped, want at least the reuse delay %s", p, old.Pod, gap, reuseDelay)
				}
			}
		}
	})

	step("delete a pod", func(t *testing.T) {
		old := d.holders(t, "validator-2")["validator-2"]
		c.mustKubectl(t, "-n", d.ns, "delete", "pod", "validator-2", "--wait=false")
		h := d.newHolder(t, "validator-2", old)
		if !d.report(t, old.Container).Stopped {
			t.Errorf("the deleted pod's key holder left no stopped record (SIGTERM, then %s)", stopDelay)
		}
		t.Logf("validator-2 again: container %s, keys %v", short(h.Container), h.Pubkeys)
	})

	step("kubelet stopped, pod force-deleted, kubelet restarted", func(t *testing.T) {
		old := d.holders(t, "validator-0")["validator-0"]
		before := d.states(t)
		if out, err := c.script(context.Background(), time.Minute, "cluster.sh", "kubelet-stop"); err != nil {
			t.Fatalf("kubelet-stop: %v\n%s", err, out)
		}
		s := time.Now()
		d.nodeReady(t, false, 90*time.Second)
		t.Logf("node not Ready %s after the kubelet stopped", time.Since(s).Round(time.Millisecond))
		c.mustKubectl(t, "-n", d.ns, "delete", "pod", "validator-0", "--grace-period=0", "--force", "--wait=false")
		eventually(t, time.Minute, "the force-deleted pod replaced by a new (unschedulable) one", func() (bool, error) {
			p, err := c.cs.CoreV1().Pods(d.ns).Get(context.Background(), "validator-0", metav1.GetOptions{})
			return err == nil && string(p.UID) != old.PodUID, err
		})
		// The old container runs on without a kubelet: its keys stay with it.
		hold := time.Now().Add(reuseDelay + 6*time.Second)
		for time.Now().Before(hold) {
			if !d.isRunning(t, old.Container) {
				t.Fatalf("the orphaned container %s stopped while the kubelet was down", short(old.Container))
			}
			time.Sleep(500 * time.Millisecond)
		}
		if r := d.report(t, old.Container); time.Since(r.End) > 2*time.Second {
			t.Fatalf("the orphaned container's last report is %s old: it should still be holding", time.Since(r.End))
		}
		// pkmanager's view, only to show the wait meant something: nothing was released meanwhile
		if after := d.states(t); after["assigned"] < before["assigned"] {
			t.Errorf("keys released while the node was not Ready: assigned %d -> %d", before["assigned"], after["assigned"])
		}
		if out, err := c.script(context.Background(), 3*time.Minute, "cluster.sh", "kubelet-start"); err != nil {
			t.Fatalf("kubelet-start: %v\n%s", err, out)
		}
		eventually(t, 2*time.Minute, "the kubelet kills the orphaned container", func() (bool, error) {
			return !d.isRunning(t, old.Container), nil
		})
		h := d.newHolder(t, "validator-0", old)
		t.Logf("validator-0 again: container %s, keys %v", short(h.Container), h.Pubkeys)
	})

	step("StatefulSet rolling update", func(t *testing.T) {
		before := d.holders(t, "validator-0", "validator-1", "validator-2")
		c.mustKubectl(t, "-n", d.ns, "patch", "statefulset", "validator", "--type=merge",
			"-p", `{"spec":{"template":{"metadata":{"annotations":{"test.pkmanager.io/revision":"2"}}}}}`)
		c.mustKubectl(t, "-n", d.ns, "rollout", "status", "statefulset/validator", "--timeout=240s")
		after := d.holders(t, "validator-0", "validator-1", "validator-2")
		for p, h := range after {
			if h.PodUID == before[p].PodUID {
				t.Errorf("%s was not replaced by the rolling update", p)
			}
		}
	})

	step("pkmanager killed during requests", func(t *testing.T) {
		d.scale(t, 1)
		d.cooled(t, 2*keysPerPod)
		d.scale(t, 3)
		// SIGKILL the server as soon as validator-1's init container is asking
		eventually(t, time.Minute, "validator-1's init container running", func() (bool, error) {
			return d.initRunning(t, "validator-1"), nil
		})
		d.killServer(t)
		h := d.holders(t, "validator-0", "validator-1", "validator-2")
		t.Logf("after the kill: %d pods hold keys", len(h))
	})

	step("pkmanager rollout", func(t *testing.T) {
		before := d.holders(t, "validator-0", "validator-1", "validator-2")
		c.mustKubectl(t, "-n", d.ns, "rollout", "restart", "deployment/pkmanager")
		c.mustKubectl(t, "-n", d.ns, "rollout", "status", "deployment/pkmanager", "--timeout=180s")
		d.checkServerPod(t)
		after := d.holders(t, "validator-0", "validator-1", "validator-2")
		for p, h := range after {
			if h.Container != before[p].Container {
				t.Errorf("%s's key holder changed from %s to %s during pkmanager's rollout", p, short(before[p].Container), short(h.Container))
			}
		}
		// the new server serves and releases: one more pod replaced
		old := after["validator-1"]
		c.mustKubectl(t, "-n", d.ns, "delete", "pod", "validator-1", "--wait=false")
		d.newHolder(t, "validator-1", old)
	})
	t.Logf("whole scenario: %s", time.Since(t0).Round(time.Millisecond))
}

func overlaps(a, b []string) bool {
	for _, k := range a {
		if slices.Contains(b, k) {
			return true
		}
	}
	return false
}

func (d *deployment) scale(t *testing.T, n int) {
	t.Helper()
	d.c.mustKubectl(t, "-n", d.ns, "scale", "statefulset/validator", fmt.Sprintf("--replicas=%d", n))
}

// holders waits until each named pod (its current UID) has a running key
// holder that loaded its keys, and returns what they report. Keys are
// disjoint across pods.
func (d *deployment) holders(t *testing.T, pods ...string) map[string]*holding {
	t.Helper()
	out := map[string]*holding{}
	for _, name := range pods {
		var h *holding
		eventually(t, 3*time.Minute, name+" holds its keys", func() (bool, error) {
			p, err := d.c.cs.CoreV1().Pods(d.ns).Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				return false, nil
			}
			cs, err := d.c.containers("running")
			if err != nil {
				return false, err
			}
			for _, ct := range cs {
				if ct.Metadata.Name != "validator" || ct.Labels["io.kubernetes.pod.uid"] != string(p.UID) {
					continue
				}
				r, err := readReport(filepath.Join(d.reports, ct.ID+".jsonl"))
				if err != nil || r == nil || !r.Loaded {
					return false, err
				}
				h = r
				return true, nil
			}
			return false, nil
		})
		if h.Pod != name || len(h.Pubkeys) != keysPerPod {
			t.Fatalf("%s's key holder reports pod %s with %d keys, want %d", name, h.Pod, len(h.Pubkeys), keysPerPod)
		}
		out[name] = h
	}
	seen := map[string]string{}
	for p, h := range out {
		for _, k := range h.Pubkeys {
			if o, dup := seen[k]; dup {
				t.Fatalf("key %s is held by %s and %s", short(k), o, p)
			}
			seen[k] = p
		}
	}
	return out
}

// newHolder waits for the pod of that name to be a new one (not old's UID)
// that holds its keys, and checks the old container is gone.
func (d *deployment) newHolder(t *testing.T, name string, old *holding) *holding {
	t.Helper()
	eventually(t, 3*time.Minute, name+" recreated", func() (bool, error) {
		p, err := d.c.cs.CoreV1().Pods(d.ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && string(p.UID) != old.PodUID, err
	})
	h := d.holders(t, name)[name]
	if h.PodUID == old.PodUID {
		t.Fatalf("%s: still the old pod", name)
	}
	if d.isRunning(t, old.Container) {
		t.Fatalf("%s's old container %s still runs beside the new one", name, short(old.Container))
	}
	return h
}

// gone waits until the pods of these holders are gone from the API and their
// containers from the runtime.
func (d *deployment) gone(t *testing.T, hs ...*holding) {
	t.Helper()
	for _, h := range hs {
		eventually(t, 2*time.Minute, h.Pod+" gone", func() (bool, error) {
			p, err := d.c.cs.CoreV1().Pods(d.ns).Get(context.Background(), h.Pod, metav1.GetOptions{})
			if apierrors.IsNotFound(err) || (err == nil && string(p.UID) != h.PodUID) {
				return !d.isRunning(t, h.Container), nil
			}
			return false, err
		})
	}
}

func (d *deployment) isRunning(t *testing.T, id string) bool {
	t.Helper()
	cs, err := d.c.containers("running")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.ID == id {
			return true
		}
	}
	return false
}

func (d *deployment) report(t *testing.T, id string) *holding {
	t.Helper()
	h, err := readReport(filepath.Join(d.reports, id+".jsonl"))
	if err != nil || h == nil {
		t.Fatalf("report of %s: %v", short(id), err)
	}
	return h
}

func (d *deployment) states(t *testing.T) map[string]int {
	t.Helper()
	var st map[string]int
	eventually(t, time.Minute, "pkmanager's /metrics", func() (bool, error) {
		var err error
		st, err = d.keyStates()
		return err == nil, err
	})
	return st
}

// cooled waits until at least n keys are available and none cools down (pacing only).
func (d *deployment) cooled(t *testing.T, n int) {
	t.Helper()
	eventually(t, time.Minute+reuseDelay, fmt.Sprintf("%d released keys cooled down", n), func() (bool, error) {
		st, err := d.keyStates()
		return err == nil && st["available"] >= n && st["cooling-down"] == 0, err
	})
}

func (d *deployment) nodeReady(t *testing.T, want bool, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("node Ready=%v", want), func() (bool, error) {
		n, err := d.c.cs.CoreV1().Nodes().Get(context.Background(), "localhost", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return (cond.Status == corev1.ConditionTrue) == want, nil
			}
		}
		return false, nil
	})
}

func (d *deployment) initRunning(t *testing.T, pod string) bool {
	t.Helper()
	cs, err := d.c.containers("running")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Metadata.Name == "keys" && c.Labels["io.kubernetes.pod.name"] == pod && c.Labels["io.kubernetes.pod.namespace"] == d.ns {
			return true
		}
	}
	return false
}

// inspected is what crictl inspect says of a container.
type inspected struct {
	Info struct {
		Pid         int `json:"pid"`
		RuntimeSpec struct {
			Process struct {
				User struct {
					UID int `json:"uid"`
					GID int `json:"gid"`
				} `json:"user"`
				NoNewPrivileges bool `json:"noNewPrivileges"`
				Capabilities    struct {
					Effective []string `json:"effective"`
				} `json:"capabilities"`
			} `json:"process"`
			Root struct {
				Readonly bool `json:"readonly"`
			} `json:"root"`
		} `json:"runtimeSpec"`
	} `json:"info"`
	Status struct {
		Image struct {
			Image string `json:"image"`
		} `json:"image"`
		ImageRef string            `json:"imageRef"`
		Labels   map[string]string `json:"labels"`
	} `json:"status"`
}

// serverContainers waits for n running pkmanager containers and returns their IDs.
func (d *deployment) serverContainers(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	eventually(t, time.Minute, fmt.Sprintf("%d running pkmanager containers", n), func() (bool, error) {
		cs, err := d.c.containers("running")
		if err != nil {
			return false, err
		}
		ids = ids[:0]
		for _, c := range cs {
			if c.Metadata.Name == "pkmanager" && c.Labels["io.kubernetes.pod.namespace"] == d.ns {
				ids = append(ids, c.ID)
			}
		}
		return len(ids) == n, nil
	})
	return ids
}

func (d *deployment) serverContainer(t *testing.T) (string, inspected) {
	t.Helper()
	id := d.serverContainers(t, 1)[0]
	var in inspected
	if err := d.c.crictlJSON(&in, "inspect", "-o", "json", id); err != nil {
		t.Fatal(err)
	}
	return id, in
}

// checkContainer checks, from the runtime, that a pkmanager container runs
// from the image built here as 65532 on a read-only root filesystem without
// capabilities.
func (d *deployment) checkContainer(t *testing.T, id string) {
	t.Helper()
	var in inspected
	if err := d.c.crictlJSON(&in, "inspect", "-o", "json", id); err != nil {
		t.Fatal(err)
	}
	p := in.Info.RuntimeSpec.Process
	if p.User.UID != 65532 || p.User.GID != 65532 || !in.Info.RuntimeSpec.Root.Readonly || !p.NoNewPrivileges || len(p.Capabilities.Effective) != 0 {
		t.Errorf("pkmanager runs as %d:%d, read-only root %v, no new privileges %v, capabilities %v: want 65532:65532, true, true, none",
			p.User.UID, p.User.GID, in.Info.RuntimeSpec.Root.Readonly, p.NoNewPrivileges, p.Capabilities.Effective)
	}
	if in.Status.Image.Image != pkmImage && in.Status.ImageRef != d.c.images[pkmImage] && !strings.Contains(in.Status.Image.Image, pkmImage) {
		t.Errorf("pkmanager's image is %q (%s)", in.Status.Image.Image, in.Status.ImageRef)
	}
}

// checkServerPod checks the single overlay's server: its container (as
// checkContainer) and its store on the claimed volume.
func (d *deployment) checkServerPod(t *testing.T) {
	t.Helper()
	id, _ := d.serverContainer(t)
	d.checkContainer(t, id)
	pvc, err := d.c.cs.CoreV1().PersistentVolumeClaims(d.ns).Get(context.Background(), "pkmanager-data", metav1.GetOptions{})
	if err != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("claim pkmanager-data: %v %v", pvc.Status.Phase, err)
	}
	if _, err := os.Stat(filepath.Join(d.pv, "pkmanager.db")); err != nil {
		t.Errorf("the store is not on the persistent volume: %v", err)
	}
}

// killServer SIGKILLs pkmanager's process (a crash); the kubelet restarts it.
func (d *deployment) killServer(t *testing.T) {
	t.Helper()
	id, in := d.serverContainer(t)
	if in.Info.Pid <= 1 {
		t.Fatalf("pkmanager container %s has no pid", short(id))
	}
	if err := syscall.Kill(in.Info.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("pkmanager (container %s, pid %d) killed", short(id), in.Info.Pid)
}

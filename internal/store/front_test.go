package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

// unchecked is the set of Store methods that have no arguments to check:
// with a live ctx and zero arguments the front passes them on.
var unchecked = map[string]bool{
	"GetKey": true, "ListKeys": true, "Counts": true, "PodSizes": true, "Dump": true, "Load": true, "Protections": true,
	"Bindings": true, "DepositIndexCursor": true, "LookupDepositIndex": true, "Validators": true, "Ping": true,
}

// callFront calls method m of Front(backend) with ctx and zero values for
// the other arguments, and reports the error it returned and whether the
// call reached the backend (a nil Store, which panics when called).
func callFront(t *testing.T, m reflect.Method, ctx context.Context) (err error, reached bool) {
	t.Helper()
	f := reflect.ValueOf(Front(struct{ Store }{}))
	mt := m.Type
	args := make([]reflect.Value, mt.NumIn())
	for i := range args {
		args[i] = reflect.Zero(mt.In(i))
	}
	args[0] = reflect.ValueOf(ctx)
	defer func() {
		if recover() != nil {
			reached = true
		}
	}()
	out := f.MethodByName(m.Name).Call(args)
	err, _ = out[len(out)-1].Interface().(error)
	return err, false
}

// Every method but Close fails on a done ctx without reaching the
// backend, and every method with arguments to check refuses zero
// arguments without reaching it; the rest pass the call on.
func TestFrontChecksEveryCall(t *testing.T) {
	done, cancel := context.WithCancel(t.Context())
	cancel()
	st := reflect.TypeFor[Store]()
	for i := range st.NumMethod() {
		m := st.Method(i)
		if m.Name == "Close" {
			continue
		}
		if m.Type.NumIn() == 0 || m.Type.In(0) != reflect.TypeFor[context.Context]() {
			t.Errorf("%s does not take a ctx first: the front has no rule for it", m.Name)
			continue
		}
		if err, reached := callFront(t, m, done); reached || !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a done ctx: error %v, reached the backend %v; want context.Canceled, not reached", m.Name, err, reached)
		}
		err, reached := callFront(t, m, t.Context())
		switch {
		case unchecked[m.Name] && !reached:
			t.Errorf("%s with a live ctx: error %v, did not reach the backend", m.Name, err)
		case !unchecked[m.Name] && (reached || !errors.Is(err, ErrInvalidArgument)):
			t.Errorf("%s with zero arguments: error %v, reached the backend %v; want ErrInvalidArgument, not reached", m.Name, err, reached)
		}
	}
}

type clockStore struct{ Store }

func (clockStore) Now() time.Time { return time.Time{} }

func TestFrontUnwrap(t *testing.T) {
	b := clockStore{}
	f := Front(b)
	if Front(f) != f {
		t.Error("Front of a fronted store is not that store")
	}
	if u, ok := f.(interface{ Unwrap() Store }); !ok || u.Unwrap() != Store(b) {
		t.Error("Unwrap does not return the backend")
	}
	if _, ok := f.(Clock); ok {
		t.Error("the front itself claims the optional interface Clock")
	}
	if c, ok := As[Clock](f); !ok || c != Clock(b) {
		t.Errorf("As[Clock] through the front = %v, %v; want the backend", c, ok)
	}
	if _, ok := As[Owners](f); ok {
		t.Error("As[Owners] found an interface the backend does not have")
	}
	if _, ok := As[Clock](nil); ok {
		t.Error("As on a nil store found something")
	}
}

package admission

import (
	"context"
	"sync"
)

// callGate bounds backend calls in flight. A nil gate admits everything.
type callGate struct{ slots chan struct{} }

func newCallGate(n int) *callGate {
	if n <= 0 {
		return nil
	}
	return &callGate{slots: make(chan struct{}, n)}
}

// acquire waits for a free slot until ctx ends.
func (g *callGate) acquire(ctx context.Context) error {
	if g == nil {
		return nil
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (g *callGate) release() {
	if g != nil {
		<-g.slots
	}
}

// tenantCalls holds one gate per tenant with running requests, so a
// tenant's requests together keep within max_concurrent_backend_calls.
type tenantCalls struct {
	mu    sync.Mutex
	gates map[string]*sharedGate
}

type sharedGate struct {
	gate  *callGate
	users int
}

// join returns tenant's gate for limit n (0: none) and the function that
// gives it back when the request ends; the last request of a tenant drops
// the gate, so the map holds only tenants with running requests.
func (tc *tenantCalls) join(tenant string, n int) (*callGate, func()) {
	if n <= 0 {
		return nil, func() {}
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.gates == nil {
		tc.gates = map[string]*sharedGate{}
	}
	sg := tc.gates[tenant]
	if sg == nil {
		sg = &sharedGate{gate: newCallGate(n)}
		tc.gates[tenant] = sg
	}
	sg.users++
	var once sync.Once
	return sg.gate, func() {
		once.Do(func() {
			tc.mu.Lock()
			defer tc.mu.Unlock()
			if sg.users--; sg.users == 0 && tc.gates[tenant] == sg {
				delete(tc.gates, tenant)
			}
		})
	}
}

package kubetest

import (
	"context"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestEnv proves the helper: the API server starts, a pod-bound token is
// accepted, a token the helper signs itself is accepted when valid and
// rejected when expired (so tests can rely on SignToken), and the API server
// can be stopped and started again on the same data.
func TestEnv(t *testing.T) {
	assets, why := Assets()
	if assets == "" {
		SkipOrFail(t, why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, err := Start(ctx, assets, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()

	const ns, sa, aud = "probe", "probe-sa", "pkmanager"
	if err := env.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := env.ServiceAccount(ctx, ns, sa); err != nil {
		t.Fatal(err)
	}
	pod, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p1"},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saObj, err := env.Client.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	review := func(tok string) authnv1.TokenReviewStatus {
		t.Helper()
		r, err := env.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: []string{aud}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	tok, err := env.PodToken(ctx, ns, sa, pod.Name, pod.UID, aud)
	if err != nil {
		t.Fatal(err)
	}
	if st := review(tok); !st.Authenticated || st.User.Extra["authentication.kubernetes.io/pod-uid"][0] != string(pod.UID) {
		t.Fatalf("bound token review: %+v", st)
	}
	now := time.Now()
	signed, err := env.SignToken(PodClaims(ns, sa, string(saObj.UID), pod.Name, string(pod.UID), aud, now.Add(-time.Minute), now.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if st := review(signed); !st.Authenticated {
		t.Fatalf("self-signed valid token rejected: %s", st.Error)
	}
	expired, err := env.SignToken(PodClaims(ns, sa, string(saObj.UID), pod.Name, string(pod.UID), aud, now.Add(-2*time.Hour), now.Add(-time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if st := review(expired); st.Authenticated || !strings.Contains(st.Error, "expired") {
		t.Fatalf("expired token: authenticated=%v error=%q", st.Authenticated, st.Error)
	}

	env.StopAPIServer()
	if _, err := env.Client.CoreV1().Pods(ns).Get(ctx, "p1", metav1.GetOptions{}); err == nil {
		t.Fatal("API server still answers after StopAPIServer")
	}
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Pods(ns).Get(ctx, "p1", metav1.GetOptions{}); err != nil {
		t.Fatalf("pod lost across an API server restart: %v", err)
	}
}

package main

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/features"
)

// Device health (KEP-4680). With ResourceHealthStatus on, the DRA manager's
// plugin manager opens each driver's NodeWatchResources stream and the
// manager names the pods whose devices changed health on Updates(). The
// kubelet's sync loop re-syncs those pods, and generateAPIPodStatus fills
// containerStatuses[].allocatedResourcesStatus by calling the DRA manager's
// UpdateAllocatedResourcesStatus. The harness does the same: on each update
// it recomputes the status of the named running pods with that function and
// writes it to the apiserver; setRunning applies it to the first status too.

func healthEnabled() bool {
	return utilfeature.DefaultFeatureGate.Enabled(features.ResourceHealthStatus)
}

// updateAllocatedResourcesStatus calls the DRA manager's own function. Its
// signature gained a logger in 1.37; a type switch instead of per-version
// adapters keeps this file the same for every Kubernetes version.
func (h *kubeletHarness) updateAllocatedResourcesStatus(logger klog.Logger, pod *v1.Pod, status *v1.PodStatus) error {
	switch m := any(h.mgr).(type) {
	case interface {
		UpdateAllocatedResourcesStatus(klog.Logger, *v1.Pod, *v1.PodStatus)
	}:
		m.UpdateAllocatedResourcesStatus(logger, pod, status)
	case interface {
		UpdateAllocatedResourcesStatus(*v1.Pod, *v1.PodStatus)
	}:
		m.UpdateAllocatedResourcesStatus(pod, status)
	default:
		return fmt.Errorf("the DRA manager of %s has no UpdateAllocatedResourcesStatus this harness knows", kubeletVersion())
	}
	return nil
}

// healthLoop consumes the DRA manager's pod updates until ctx ends.
func (h *kubeletHarness) healthLoop(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("health")
	for {
		select {
		case <-ctx.Done():
			return
		case update := <-h.mgr.Updates():
			h.events.emit("healthUpdate", map[string]any{"uids": update.PodUIDs})
			for _, uid := range update.PodUIDs {
				if err := h.refreshHealth(ctx, types.UID(uid)); err != nil && ctx.Err() == nil {
					logger.Error(err, "Updating allocatedResourcesStatus failed", "uid", uid)
					h.events.emit("healthStatusFailed", map[string]any{"uid": uid, "error": err.Error()})
				}
			}
		}
	}
}

// refreshHealth recomputes and writes the allocatedResourcesStatus of one
// running pod. Pods not yet running get it from setRunning.
func (h *kubeletHarness) refreshHealth(ctx context.Context, uid types.UID) error {
	h.mu.Lock()
	st := h.pods[uid]
	running := st != nil && st.running
	var namespace, name string
	if running {
		namespace, name = st.pod.Namespace, st.pod.Name
	}
	h.mu.Unlock()
	if !running {
		return nil
	}
	logger := klog.FromContext(ctx)
	var written *v1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := h.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if current.UID != uid {
			return apierrors.NewNotFound(v1.Resource("pods"), name)
		}
		status := current.Status.DeepCopy()
		if err := h.updateAllocatedResourcesStatus(logger, current, status); err != nil {
			return err
		}
		if apiequality.Semantic.DeepEqual(status, &current.Status) {
			written = current
			return nil
		}
		current.Status = *status
		written, err = h.client.CoreV1().Pods(current.Namespace).UpdateStatus(ctx, current, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	h.emitHealth(written)
	return nil
}

// emitHealth reports the allocatedResourcesStatus the apiserver stored.
func (h *kubeletHarness) emitHealth(pod *v1.Pod) {
	containers := map[string]any{}
	for _, cs := range pod.Status.ContainerStatuses {
		containers[cs.Name] = cs.AllocatedResourcesStatus
	}
	h.events.emit("resourceHealth", map[string]any{"pod": podKey(pod), "uid": string(pod.UID), "containers": containers})
}

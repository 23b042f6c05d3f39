package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// podFlags are --pod-name and --pod-name-from-hostname of the commands that
// act for one pod.
type podFlags struct {
	name         string
	fromHostname bool
}

func (p *podFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&p.name, "pod-name", "", what+" (default $POD_NAME)")
	cmd.Flags().BoolVar(&p.fromHostname, "pod-name-from-hostname", false, "without --pod-name and $POD_NAME, use the hostname as the pod name (in a pod it is the pod's name; elsewhere it is the machine's)")
}

// resolve returns the pod name: --pod-name, else $POD_NAME, else the
// hostname when --pod-name-from-hostname asks for it. An empty --pod-name
// is an error, not a fallback.
func (p *podFlags) resolve(cmd *cobra.Command) (string, error) {
	if cmd.Flags().Changed("pod-name") && p.name == "" {
		return "", errors.New("--pod-name is empty: give the pod's name")
	}
	name, err := podNameDefault(p.name)
	if err == nil || !p.fromHostname {
		return name, err
	}
	h, herr := os.Hostname()
	if herr != nil || h == "" {
		return "", fmt.Errorf("--pod-name-from-hostname: no hostname (%v)", herr)
	}
	return h, nil
}

// podNameDefault: the flag's pod name, else $POD_NAME (the Downward API
// convention), else an error that says what to give. The hostname is never
// taken silently: outside a pod it names a machine, and keys would be
// minted for a pod that does not exist.
func podNameDefault(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if v := os.Getenv("POD_NAME"); v != "" {
		return v, nil
	}
	return "", errors.New("no pod name: give --pod-name, set $POD_NAME (the Downward API's metadata.name in a pod), or --pod-name-from-hostname")
}

package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
)

// keyListEntry is one key of `keys list --output json`.
type keyListEntry struct {
	Pubkey         string `json:"pubkey"`
	State          string `json:"state"`
	Pod            string `json:"pod,omitempty"`
	PodUID         string `json:"pod_uid,omitempty"`
	LastPod        string `json:"last_pod,omitempty"`
	Origin         string `json:"origin,omitempty"`
	DerivationPath string `json:"derivation_path,omitempty"`
	Since          string `json:"since,omitempty"`
	CoolingUntil   string `json:"cooling_until,omitempty"`
	RetiredReason  string `json:"retired_reason,omitempty"`
}

func listEntry(k *pb.KeyInfo) keyListEntry {
	ts := func(t *timestamppb.Timestamp) string {
		if t == nil {
			return ""
		}
		return t.AsTime().UTC().Format(time.RFC3339)
	}
	return keyListEntry{
		Pubkey: "0x" + hex.EncodeToString(k.GetPubkey()), State: k.GetState(), Pod: k.GetPodName(), PodUID: k.GetPodUid(),
		LastPod: k.GetLastPodName(), Origin: k.GetOrigin(), DerivationPath: k.GetDerivationPath(),
		Since: ts(k.GetSince()), CoolingUntil: ts(k.GetCoolingUntil()),
		RetiredReason: k.GetRetiredReason(),
	}
}

func newKeysListCommand(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var states []string
	var pod, output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the server's keys (public information only): state, pod, origin, derivation path",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: use table or json", output)
			}
			c, ctx, done, err := cf.connect(cmd, g)
			if err != nil {
				return err
			}
			defer done()
			ks, err := c.ListKeys(ctx, &pb.ListKeysRequest{States: states, PodName: pod})
			if err != nil {
				return err
			}
			entries := make([]keyListEntry, len(ks))
			for i, k := range ks {
				entries[i] = listEntry(k)
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "PUBKEY\tSTATE\tPOD\tORIGIN\tPATH\tSINCE\tNOTE")
			dash := func(s string) string {
				if s == "" {
					return "-"
				}
				return s
			}
			for _, e := range entries {
				note := e.RetiredReason
				if e.CoolingUntil != "" {
					note = "reusable from " + e.CoolingUntil
				}
				if e.Pod == "" && e.LastPod != "" {
					note = "last pod " + e.LastPod + noteSep(note)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Pubkey, e.State, dash(e.Pod), dash(e.Origin), dash(e.DerivationPath), dash(e.Since), dash(note))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s\n", plural(len(entries), "key"))
			return nil
		},
	}
	cf.register(cmd, time.Minute)
	fl := cmd.Flags()
	fl.StringSliceVar(&states, "state", nil, "only keys in these states (pending-deposit, available, assigned, cooling-down, retired, ...; repeatable, comma-separated)")
	fl.StringVar(&pod, "pod", "", "only the keys this pod holds")
	fl.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func noteSep(note string) string {
	if note == "" {
		return ""
	}
	return "; " + note
}

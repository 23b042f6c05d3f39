package server

import "errors"

// checkRequireActive checks --require-active against the other options:
// the statuses come from a beacon node, and keys minted with exported
// deposit data (assigned at once, deposited by an operator some day) could
// never be active when they are handed out.
func (s *Server) checkRequireActive() error {
	if !s.opts.Beacon.RequireActive {
		return nil
	}
	if len(s.opts.Beacon.URLs) == 0 {
		return errors.New("--require-active needs --beacon-url: the beacon node says which validators are active")
	}
	switch s.opts.Deposits.Mode {
	case DepositsChain, DepositsOff:
		return nil
	}
	return errors.New("--require-active needs --deposits chain or off: with exported deposit data a minted key is handed out at once, before anyone deposited it, so it is never active then")
}

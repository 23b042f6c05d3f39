package server

import (
	"encoding/hex"

	"github.com/ethereum/go-ethereum/common"

	"github.com/pkmanager/pkmanager/internal/httpapi"
)

// pageNetwork is the network header of /assignments: the deposit network
// and fork version keys are minted for, and the execution chain (the
// node's chain ID and contract once connected, else the configured ones).
func (s *Server) pageNetwork() httpapi.Network {
	info := s.DepositInfo()
	n := httpapi.Network{Deposits: string(info.Mode), ChainID: info.ChainID, DepositContract: info.Contract}
	if info.Mode == DepositsChain {
		n.Confirmations = info.Confirmations
	}
	if net := s.opts.Mint.Network; net.Name != "" || net.GenesisForkVersion != [4]byte{} {
		n.Name, n.GenesisForkVersion = net.Name, "0x"+hex.EncodeToString(net.GenesisForkVersion[:])
	}
	o := s.opts.Deposits
	if n.ChainID == "" && o.ChainID != nil {
		n.ChainID = o.ChainID.String()
	}
	if n.DepositContract == "" && o.Contract != (common.Address{}) {
		n.DepositContract = o.Contract.Hex()
	}
	return n
}

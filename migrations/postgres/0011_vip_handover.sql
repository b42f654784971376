-- Ringfort schema v11: a handover asked of a floating IP's holder (`ringfort cluster
-- handover`). NULL: none; '' : to any other node; else the node id asked to take it.
-- The holder reads it with its next renewal, drops the address, then hands the lease on;
-- every acquire clears it.
ALTER TABLE vip_leases ADD COLUMN handover_to TEXT;

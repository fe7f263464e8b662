-- A delivery a route's filter dropped: state 'filtered' (its reason names the rule).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('pending', 'in_flight', 'delivered', 'dead', 'stale', 'filtered'));

"""Planning: behaviour, local planner, lateral/longitudinal controllers, safety supervisor, policy arbitration."""

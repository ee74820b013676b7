"""What the stand-in knows: checkout sessions and the payment objects they lead to
(PaymentIntents, charges, refunds, disputes), how they change, and the events each change emits.

Nothing here locks: the stand-in calls every method with its one lock held. Lookups the API
makes return None for an unknown id (the API answers 404); control operations raise KeyError
for an unknown id and ValueError for a change the object's state does not allow.
"""

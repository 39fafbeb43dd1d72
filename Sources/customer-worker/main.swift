print("customer-worker")

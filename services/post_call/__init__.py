"""After the call: durable jobs that summarise it, extract its data, update the caller's lead
and tell the business's own systems.

`CallJournal.finish` stores a `post_call` job with the call's end; `start_workers(app)` runs
this process's workers; `python -m services.post_call` runs workers alone.

| module | what |
| --- | --- |
| jobs | the jobs table: enqueue, claim under a lease, complete, retry with backoff |
| worker | the greenlets that claim and run jobs |
| process | what each job kind does |
| transcript, recording | the transcript a job analyses: the recording's, or the live turns |
| analysis | summary and extraction through the OpenAI REST API |
| leads | the caller's lead |
| webhook | the signed `call.completed` event and its delivery |
"""

"""clipguide's local web UI (`clipguide-ui`, `pip install 'clipguide[ui]'`): a thin shell over the
Python API, like the command line.

- `jobs.py`: the job queue (runs live in the server, one at a time; pages only look);
- `live.py`: the live preview an `on_step` observer keeps (picture, step, it/s, loss curve);
- `form.py`: the form made from the option declarations; `uploads.py`: what pages send, under
  generated names in a temporary folder; `gallery.py`: the output folder read from the recipes;
- `runner.py`: runs through `make_plan`, `Session`, `run_batch`, `resume_plan`;
- `app.py`: the state and actions without the page; `page.py`: the Gradio page; `serve.py`: the command.

Only page.py and serve.py import Gradio; nothing here is imported by the command line."""

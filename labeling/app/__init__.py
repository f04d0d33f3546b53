"""The labeling web app (Gradio), in small modules; importing this package imports nothing heavy.

    context.py   AppContext: the engine and settings every handler gets (no module globals)
    auth.py      login check for Gradio's auth, the Viewer behind each request, role checks
    render.py    untrusted text -> sanitised HTML (markdown-it + Pygments + nh3)
    service.py   the annotator's use cases (next task, submit, skip, progress), gradio-free
    admin.py     the admin's use cases (stats, projects, export), gradio-free, role-checked
    handlers.py  the viewer behind a Gradio request; user errors as one-line messages
    annotate.py  the annotator page (+ keys.js shortcuts, app.css);  dashboard.py  the admin dashboard
    arena_page.py  the arena page: a typed prompt, two anonymous models streaming, the vote (labeling.arena)
    api.py       the same actions as Gradio API endpoints (gradio_client), same login
    rest.py      the same endpoints as plain JSON (POST /v1/<name>); params.py checks their bodies
    guard.py     what Gradio's login check alone lets through;  login.py  sign-in checks and throttle
    build.py     assembles the Blocks and the launch arguments
"""

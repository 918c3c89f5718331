"""Transfer Learning Studio: page config and navigation. Imports no TensorFlow.

The pages live in app_pages/, not pages/: with a pages/ folder Streamlit starts in its old
multipage mode, and a deep link (/train) on a fresh server skips this file.
"""

import streamlit as st

from ui.owner import keep_token
from ui.state import serve_many

st.set_page_config(page_title="Transfer Learning Studio", page_icon=":material/school:", layout="wide")
# Root-level secrets (e.g. TL_MEMORY_BUDGET_MB on Community Cloud) become environment
# variables only once the secrets file is read; the app itself reads only owner_secret.
st.secrets.load_if_toml_exists()
keep_token()  # this browser's owner token (a cookie), for who may delete what on a shared app
serve_many()  # many sessions share the server's models: Streamlit must not reset Keras after each run

PAGES = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/data.py", title="Data", icon=":material/photo_library:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/classify.py", title="Classify", icon=":material/image_search:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
]

st.navigation(PAGES).run()

"""T1 Lab dashboard (Streamlit pages over run folders)."""

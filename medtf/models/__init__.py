"""medtf.models"""
